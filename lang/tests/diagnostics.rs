//! Each case is a wrong playbook and what `kds check` says about it. The snapshot's header
//! (`description`) holds the playbook; the body is the rendered diagnostics.

fn check(name: &str, source: &str) {
    let diagnostics = kds_lang::lint(source, "playbook.kds");
    assert!(
        !diagnostics.is_empty(),
        "case {name}: expected at least one diagnostic"
    );
    let rendered = kds_lang::render(&diagnostics, "playbook.kds", source);
    insta::with_settings!({ description => source, omit_expression => true }, {
        insta::assert_snapshot!(name, rendered);
    });
}

macro_rules! case {
    ($name:ident, $source:expr) => {
        #[test]
        fn $name() {
            check(stringify!($name), $source);
        }
    };
}

// Commands
case!(unknown_bang_command, "!proces 0 0 lsass.exe\n");
case!(unknown_dot_command, "param p = 0\n.proccess /p /r $p\n");
case!(unknown_plain_command, "kbb 20\n");
case!(unknown_command_without_suggestion, "!analyze -v\n");
case!(process_wants_an_address_first, "!process lsass.exe\n");
case!(pte_needs_an_address, "!pte\n");
case!(dump_takes_address_and_length_only, "dq @$peb L4 5\n");
case!(reload_unknown_option, ".reload /x nt\n");
case!(process_switch_without_a_process, ".process /p /r\n");
case!(sym_mode, "!sym loud\n");
case!(lm_pattern_without_m, "lm nt*\n");
case!(x_needs_module_pattern, "x PsActiveProcessHead\n");
case!(assignment_reads_as_command, "x = 5\n");
case!(
    bare_binding_as_address,
    "let p = processes | first\n!process p 7\n"
);
case!(
    bare_binding_as_word,
    "param name = \"lsass.exe\"\n!process 0 0 name\n"
);

// Names
case!(
    unknown_variable_with_suggestion,
    "param name = \"lsass.exe\"\n!process 0 0 $nme\n"
);
case!(unknown_variable_nothing_declared, "!process 0 0 $image\n");
case!(
    let_used_before_definition,
    "!process $p 7\nlet p = processes | where name == \"lsass.exe\" | single\n"
);
case!(
    duplicate_param,
    "param name = \"lsass.exe\"\n!vm\nparam name = \"svchost.exe\"\n"
);
case!(
    misspelt_collection,
    "procesess | where name == \"lsass.exe\" | show\n"
);
case!(
    misspelt_binding_in_expression,
    "let waiting = threads | where state == \"Waiting\"\nexpect (waitng | count) < 10\n"
);
case!(
    pipeline_result_compared_without_parentheses,
    "expect threads | count < 100\n"
);

// Pipelines
case!(
    unknown_stage,
    "processes | wher name == \"lsass.exe\" | show\n"
);
case!(unknown_stage_parsed_as_bitwise_or, "processes | cout\n");
case!(select_without_columns, "processes | select | show\n");
case!(
    show_table_with_empty_parentheses,
    "processes | show table()\n"
);
case!(stage_after_count, "processes | count | show\n");
case!(
    row_stage_after_single,
    "threads | single | where state == \"Waiting\"\n"
);
case!(show_before_the_end, "processes | show | take 5\n");
case!(sort_without_by, "processes | sort name desc\n");

// Statements
case!(expect_without_condition, "expect\n");
case!(
    expect_else_without_severity_or_message,
    "expect bugcheck == 0xE2 else\n"
);
case!(
    unknown_severity,
    "expect bugcheck == 0xE2 else error \"not a manual crash\"\n"
);
case!(let_without_equals, "let p processes | single\n");
case!(
    expression_missing_after_operator,
    "let p = processes | where name == | single\n"
);
case!(assignment_without_let, "name = \"lsass.exe\"\n");
case!(hex_without_0x_in_expression, "let a = ffffc10a`12345080\n");
case!(section_without_body, "section \"Memory\"\n!vm\n");
case!(block_without_section, "{ !vm }\n");
case!(use_unknown_kind, "use \"helpers.py\"\n");

// Literals and parameters
case!(number_too_large, "let n = 0x1_0000_0000_0000_0000\n");
case!(command_number_too_large, "dq ffffffff`ffffffff`ff\n");
case!(
    unknown_string_escape,
    "let path = \"C:\\Windows\\System32\"\n"
);
case!(unknown_type, "param limit: integer = 5000\n");
case!(list_without_element_type, "param ids: list = [4, 8]\n");
case!(
    default_does_not_fit_type,
    "param ids: list<int> = [4, \"eight\"]\n"
);
case!(param_without_type_or_default, "param name\n");
case!(param_default_not_literal, "param limit = 50 * 100\n");

// Delimiters and limits
case!(unclosed_string, "let name = \"lsass.exe\n!vm\n");
case!(
    unclosed_paren_next_line_still_checked,
    "let n = (1 + 2\n!proces 0 0\n"
);
case!(mismatched_bracket, "let ids = [4, 8)\n");
case!(unclosed_section, "section \"Memory\" {\n    !vm\n");
case!(unmatched_closing_brace, "!vm\n}\n");
case!(error_at_the_very_end_of_the_file, "!vm\nlet n = 1 +");
case!(
    error_on_a_very_long_line,
    &format!("let n = {}1 +\n", "1 + ".repeat(200))
);
case!(
    nesting_too_deep,
    &format!("let x = {}1{}\n", "(".repeat(100), ")".repeat(100))
);

// Several at once
case!(
    several_syntax_errors,
    "let = 5\nlet y = 1 +\n!vm\nexpect\nprocesses | where\n"
);
case!(
    several_kinds_at_once,
    r#"param name = "lsass.exe"
param name = "svchost.exe"
!proces 0 0 $name
let p = processes | where name == $nme | single
.process /p /r $p
!peb (p.Peb
threads | count | show
dq @$peb L4 5
"#
);
case!(
    errors_inside_a_section_are_all_reported,
    "section \"Triage\" {\n    !vm 1\n    !sym loud\n    processes | select\n    expect\n}\n"
);
