//! Stop codes: their names (bugcodes.h) and what they mean for the analysis.

use serde::Serialize;

/// A decoded stop code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BugCheckInfo {
    pub code: u32,
    pub name: Option<&'static str>,
    pub parameters: [u64; 4],
    /// The dump was taken on purpose from a running system (keyboard, NMI button, live dump):
    /// analyse it as a hang, not as a crash cause.
    pub taken_on_demand: bool,
}

const NAMES: &[(u32, &str)] = &[
    (0x0A, "IRQL_NOT_LESS_OR_EQUAL"),
    (0x19, "BAD_POOL_HEADER"),
    (0x1A, "MEMORY_MANAGEMENT"),
    (0x1E, "KMODE_EXCEPTION_NOT_HANDLED"),
    (0x24, "NTFS_FILE_SYSTEM"),
    (0x3B, "SYSTEM_SERVICE_EXCEPTION"),
    (0x50, "PAGE_FAULT_IN_NONPAGED_AREA"),
    (0x7A, "KERNEL_DATA_INPAGE_ERROR"),
    (0x7E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"),
    (0x7F, "UNEXPECTED_KERNEL_MODE_TRAP"),
    (0x80, "NMI_HARDWARE_FAILURE"),
    (0x9E, "USER_MODE_HEALTH_MONITOR"),
    (0x9F, "DRIVER_POWER_STATE_FAILURE"),
    (0xA0, "INTERNAL_POWER_ERROR"),
    (0xC2, "BAD_POOL_CALLER"),
    (0xC4, "DRIVER_VERIFIER_DETECTED_VIOLATION"),
    (0xC5, "DRIVER_CORRUPTED_EXPOOL"),
    (0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL"),
    (0xE2, "MANUALLY_INITIATED_CRASH"),
    (0xEA, "THREAD_STUCK_IN_DEVICE_DRIVER"),
    (0xEF, "CRITICAL_PROCESS_DIED"),
    (0xF4, "CRITICAL_OBJECT_TERMINATION"),
    (0x101, "CLOCK_WATCHDOG_TIMEOUT"),
    (0x124, "WHEA_UNCORRECTABLE_ERROR"),
    (0x133, "DPC_WATCHDOG_VIOLATION"),
    (0x139, "KERNEL_SECURITY_CHECK_FAILURE"),
    (0x154, "UNEXPECTED_STORE_EXCEPTION"),
    (0x15F, "CONNECTED_STANDBY_WATCHDOG_TIMEOUT_LIVEDUMP"),
    (0x161, "LIVE_SYSTEM_DUMP"),
    (0x1C8, "MANUALLY_INITIATED_POWER_BUTTON_HOLD"),
    (0xDEADDEAD, "MANUALLY_INITIATED_CRASH1"),
];

/// Codes that mean "someone asked for this dump": the keyboard crash (0xE2, 0xDEADDEAD),
/// the NMI button (0x80), a power-button hold (0x1C8) and live dumps (0x161).
const ON_DEMAND: &[u32] = &[0xE2, 0x80, 0x161, 0x1C8, 0xDEADDEAD];

#[must_use]
pub fn decode(code: u32, parameters: [u64; 4]) -> BugCheckInfo {
    BugCheckInfo {
        code,
        name: NAMES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n),
        parameters,
        taken_on_demand: ON_DEMAND.contains(&code),
    }
}

impl BugCheckInfo {
    /// `BugCheck E2, {0, 0, 0, 0}` as WinDbg prints it when a dump opens.
    #[must_use]
    pub fn windbg_line(&self) -> String {
        let p = self.parameters;
        format!(
            "BugCheck {:X}, {{{:x}, {:x}, {:x}, {:x}}}",
            self.code, p[0], p[1], p[2], p[3]
        )
    }
}

/// `.bugcheck`: the stop code and parameters, with the code's name and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BugCheckReport {
    pub bugcheck: Option<BugCheckInfo>,
    #[serde(skip)]
    pub pointer_size: u64,
}

impl crate::report::Report for BugCheckReport {
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let Some(b) = &self.bugcheck else {
            out.push_str("No bugcheck information: the target was not stopped by a bugcheck\n");
            return;
        };
        let _ = writeln!(out, "Bugcheck code {:08X}", b.code);
        let args: Vec<String> = b
            .parameters
            .iter()
            .map(|p| crate::format::pointer(*p, self.pointer_size))
            .collect();
        let _ = writeln!(out, "Arguments {}", args.join(" "));
        if let Some(name) = b.name {
            let _ = writeln!(out, "{name} ({:x})", b.code);
        }
        if b.taken_on_demand {
            out.push_str(
                "The dump was taken on demand from a running system: analyse it as a hang, not as a crash cause.\n",
            );
        }
    }
}

/// The target's stop code, decoded.
#[must_use]
pub fn bugcheck_report(
    bugcheck: Option<kds_runtime::target::BugCheck>,
    pointer_size: u64,
) -> BugCheckReport {
    BugCheckReport {
        bugcheck: bugcheck.map(|b| decode(b.code, b.parameters)),
        pointer_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_crash_and_nmi_are_hangs_taken_on_demand() {
        let e2 = decode(0xE2, [0; 4]);
        assert_eq!(e2.name, Some("MANUALLY_INITIATED_CRASH"));
        assert!(e2.taken_on_demand);
        assert_eq!(e2.windbg_line(), "BugCheck E2, {0, 0, 0, 0}");
        let nmi = decode(0x80, [0x4f4454, 0, 0, 0]);
        assert_eq!(nmi.name, Some("NMI_HARDWARE_FAILURE"));
        assert!(nmi.taken_on_demand);
        let d1 = decode(0xD1, [0xfffff80012345678, 2, 0, 0xfffff80087654321]);
        assert_eq!(d1.name, Some("DRIVER_IRQL_NOT_LESS_OR_EQUAL"));
        assert!(!d1.taken_on_demand);
        assert_eq!(
            d1.windbg_line(),
            "BugCheck D1, {fffff80012345678, 2, 0, fffff80087654321}"
        );
        assert_eq!(decode(0x12345, [0; 4]).name, None);
    }
}
