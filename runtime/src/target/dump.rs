//! Crash dump files as targets: the `kds-crashdump` format crate below, the trait above.

use super::{
    Arch, BugCheck, Capabilities, Consistency, FileTime, ProcessorContext, ReadError, Target,
    TargetError, TargetIdentity, TargetKind, X64Context, PAGE_SIZE,
};
use kds_crashdump::{CrashDump, DumpError};
use std::path::Path;

/// A 64-bit kernel crash dump opened with memmap2.
pub struct DumpTarget {
    dump: CrashDump,
    identity: TargetIdentity,
}

impl DumpTarget {
    pub fn open(path: &Path) -> Result<DumpTarget, DumpError> {
        let dump = CrashDump::open(path)?;
        Ok(DumpTarget::from_dump(dump, path.display().to_string()))
    }

    /// Wrap an already-parsed dump; `path` is only for display.
    #[must_use]
    pub fn from_dump(dump: CrashDump, path: String) -> DumpTarget {
        let h = dump.header();
        let dump_type = dump.dump_type();
        let nonzero = |v: u64| (v != 0).then_some(v);
        let identity = TargetIdentity {
            kind: TargetKind::Dump {
                path,
                dump_type: dump_type.code(),
                dump_type_name: dump_type.name().to_string(),
            },
            arch: Arch::X64,
            os_build: Some(h.minor_version),
            checked_build: h.major_version == 0xC,
            kernel_base: None,
            ps_loaded_module_list: nonzero(h.ps_loaded_module_list),
            ps_active_process_head: nonzero(h.ps_active_process_head),
            kd_debugger_data_block: nonzero(h.kd_debugger_data_block),
            pfn_database: nonzero(h.pfn_database),
            directory_table_base: h.directory_table_base,
            // Stop code 0 means none (a capture written by kds from a running system): the
            // kernel's own KiBugCheckData is then the source, as on the live target.
            bugcheck: (h.bugcheck_code != 0).then_some(BugCheck {
                code: h.bugcheck_code,
                parameters: h.bugcheck_parameters,
            }),
            processor_count: h.number_processors,
            system_time: nonzero(h.system_time).map(FileTime),
            system_up_time: nonzero(h.system_up_time),
            comment: (!h.comment.is_empty()).then(|| h.comment.clone()),
            consistency: Consistency::Frozen,
            discovery: Vec::new(),
        };
        DumpTarget { dump, identity }
    }

    /// The parsed dump, for format-level questions (present pages, header bytes).
    #[must_use]
    pub fn dump(&self) -> &CrashDump {
        &self.dump
    }
}

impl Target for DumpTarget {
    fn identity(&self) -> &TargetIdentity {
        &self.identity
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FROZEN_CAPTURE
    }

    fn captured_pages(&self) -> Option<u64> {
        Some(self.dump.present_page_count())
    }

    fn captured_pfns(&self) -> Option<Vec<u64>> {
        Some(self.dump.present_pfns().collect())
    }

    fn read_physical(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.dump
            .read_physical(address, buf)
            .map_err(|missing| ReadError::PageNotCaptured {
                page: missing.pfn * PAGE_SIZE,
            })
    }

    /// A dump header holds the context of the processor that crashed; the others live in
    /// their KPRCBs, which the kernel layer reads.
    fn processor_context(&self, processor: u32) -> Result<ProcessorContext, TargetError> {
        let count = self.identity.processor_count;
        if processor >= count {
            return Err(TargetError::NoSuchProcessor { processor, count });
        }
        if processor != 0 {
            return Err(TargetError::ContextUnavailable {
                processor,
                reason: "the dump header holds only the crashing processor's context; \
                         the others are in their KPRCB"
                    .into(),
            });
        }
        Ok(ProcessorContext::X64(X64Context::from_amd64_context(
            &self.dump.header().context,
        )))
    }
}
