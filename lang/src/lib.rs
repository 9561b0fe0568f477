//! The kds playbook language. The grammar, AST, diagnostics and plan compiler arrive with
//! the language issue (2/7); until then `kds` runs its built-in commands (`kds info`).
