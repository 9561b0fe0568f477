//! Crash dump files as targets: the `kds-crashdump` format crate below, the trait above.

use super::{
    Arch, BugCheck, Capabilities, Consistency, FileTime, ProcessorContext, ReadError, Target,
    TargetError, TargetIdentity, TargetKind, X64Context, X86Context, PAGE_SIZE,
};
use kds_crashdump::{Bitness, CrashDump, DumpError};
use std::path::Path;

/// A kernel crash dump opened with memmap2: 64-bit (`PAGEDU64`, x64) or 32-bit (`PAGEDUMP`,
/// x86 with or without PAE as its `PaeEnabled` says).
///
/// A 32-bit header's pointers (list heads, KDBG, PFN database) are zero-extended u32s, and its
/// `DirectoryTableBase` is kept raw: a PAE CR3 is 32-byte aligned, its low 12 bits not zero.
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
            arch: arch_of(&dump),
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
        Ok(match self.dump.bitness() {
            Bitness::Bits64 => {
                ProcessorContext::X64(X64Context::from_amd64_context(&self.dump.header().context))
            }
            Bitness::Bits32 => {
                ProcessorContext::X86(X86Context::from_x86_context(self.dump.context_record()))
            }
        })
    }
}

/// The architecture a dump header describes: its layout decides (a `PAGEDUMP` header is
/// x86, with `MachineImageType` 0x14C), and `PaeEnabled` the paging mode.
fn arch_of(dump: &CrashDump) -> Arch {
    match dump.bitness() {
        Bitness::Bits64 => Arch::X64,
        Bitness::Bits32 => Arch::X86 {
            pae: dump.pae_enabled().unwrap_or(false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kds_crashdump::{write_dump32, DumpType, HeaderFields32, WriteKind};

    fn x86_dump(pae: bool, kind: WriteKind) -> CrashDump {
        let context = X86Context {
            eax: 1,
            esp: 0x8078_9a00,
            ebp: 0x8078_9abc,
            eip: 0x8234_5678,
            eflags: 0x246,
            cs: 8,
            ss: 0x10,
            ..X86Context::default()
        };
        let header = HeaderFields32 {
            minor_version: 19041,
            directory_table_base: if pae { 0x39_020 } else { 0x39_000 },
            pfn_database: 0x8440_0000,
            ps_loaded_module_list: 0x8273_a2d0,
            ps_active_process_head: 0x8271_e040,
            kd_debugger_data_block: 0x8270_0b20,
            number_processors: 2,
            bugcheck_code: 0xE2,
            bugcheck_parameters: [0x8000_0001, 2, 3, 4],
            pae_enabled: pae,
            context: context.to_x86_context(),
            ..HeaderFields32::default()
        };
        let mut out = std::io::Cursor::new(Vec::new());
        write_dump32(&mut out, &header, kind, &[0x39, 0x3a], |pfn, page| {
            page.fill(pfn as u8);
            Ok(())
        })
        .expect("write");
        CrashDump::from_bytes(out.into_inner()).expect("read")
    }

    #[test]
    fn a_32_bit_dump_is_an_x86_target() {
        let kind = WriteKind::Bitmap {
            dump_type: DumpType::BitmapFull,
        };
        let target = DumpTarget::from_dump(x86_dump(true, kind), "x86.dmp".into());
        let id = target.identity();
        assert_eq!(id.arch, Arch::X86 { pae: true });
        assert_eq!(id.directory_table_base, 0x39_020);
        assert_eq!(id.ps_loaded_module_list, Some(0x8273_a2d0));
        assert_eq!(id.ps_active_process_head, Some(0x8271_e040));
        assert_eq!(id.kd_debugger_data_block, Some(0x8270_0b20));
        assert_eq!(id.pfn_database, Some(0x8440_0000));
        assert_eq!(id.os_build, Some(19041));
        assert_eq!(id.processor_count, 2);
        assert_eq!(
            id.bugcheck,
            Some(BugCheck {
                code: 0xE2,
                parameters: [0x8000_0001, 2, 3, 4],
            })
        );
        let ProcessorContext::X86(c) = target.processor_context(0).expect("context") else {
            panic!("expected an x86 context");
        };
        assert_eq!(
            (c.eip, c.esp, c.ebp, c.eflags),
            (0x8234_5678, 0x8078_9a00, 0x8078_9abc, 0x246)
        );
        assert_eq!((c.eax, c.cs, c.ss), (1, 8, 0x10));
        let mut buf = [0u8; 2];
        target.read_physical(0x39fff, &mut buf).expect("read");
        assert_eq!(buf, [0x39, 0x3a]);
        assert_eq!(target.captured_pfns(), Some(vec![0x39, 0x3a]));
    }

    #[test]
    fn a_non_pae_full_dump_is_x86_without_pae() {
        let target = DumpTarget::from_dump(x86_dump(false, WriteKind::Full), "x86.dmp".into());
        assert_eq!(target.identity().arch, Arch::X86 { pae: false });
        assert_eq!(target.identity().directory_table_base, 0x39_000);
    }
}
