//! Memory captures of a running system, without a crash-dump header: raw physical images
//! (file offset = physical address) and ELF64 core files whose `PT_LOAD` segments map
//! physical addresses through `p_paddr` (QEMU `dump-guest-memory`, libvirt
//! `virsh dump --memory-only`), and VMware `.vmem` files laid out by the `.vmss`/`.vmsn` state
//! file beside them (see [`vmware`](self::vmware)).
//!
//! A [`PhysicalImage`] knows only bytes and where they sit in physical memory. It does not
//! know the kernel's page-table root or base: those come from header-less discovery, and its
//! [`Target`] identity leaves them empty for the caller to fill.

mod discovered;
mod elf;
pub mod vmware;

pub use discovered::{SnapshotOpenError, SnapshotTarget};

pub use elf::{EM_386, EM_X86_64};
pub use vmware::VmwareError;

use super::{
    Arch, Capabilities, Consistency, ProcessorContext, ReadError, Target, TargetError,
    TargetIdentity, TargetKind, PAGE_SIZE,
};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// How the image file lays out physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Physical address = file offset; the whole file is captured.
    Raw,
    /// ELF64 core file: `PT_LOAD` segments at their `p_paddr`.
    ElfCore,
    /// VMware `.vmem` whose regions come from the `.vmss`/`.vmsn` state file beside it.
    Vmware,
    /// VMware `.vmem` read as a raw image: no state file beside it, or one without regions.
    VmwareFlat,
}

impl ImageFormat {
    /// The name shown to users (`kds info`, the target identity).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw physical image",
            ImageFormat::ElfCore => "ELF core (QEMU/libvirt)",
            ImageFormat::Vmware => "VMware .vmem",
            ImageFormat::VmwareFlat => "VMware .vmem, read as raw",
        }
    }
}

/// A contiguous stretch of captured physical memory and where its bytes are in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub physical: u64,
    pub file_offset: u64,
    pub length: u64,
}

impl Run {
    /// One past the last physical address of the run.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.physical + self.length
    }
}

/// Why the bytes of an image cannot be read as a physical memory capture. Offsets are file
/// offsets; segment indexes count program headers from 0 in file order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImageError {
    #[error("file is empty (0 bytes): a physical image holds at least one byte of memory")]
    Empty,
    #[error(
        "file starts with the crash dump signature \"{signature}\" at offset 0x0: \
         open it as a crash dump (-z), not as a memory snapshot"
    )]
    CrashDump { signature: &'static str },
    #[error(
        "file starts with the VMware state-file magic {magic:#010x} at offset 0x0: \
         this is a .vmss/.vmsn; open the .vmem beside it"
    )]
    VmwareState { magic: u32 },
    #[error("ELF header needs {needed:#x} bytes at offset 0x0, the file has {file_len:#x}")]
    ElfHeaderTruncated { needed: u64, file_len: u64 },
    #[error(
        "ELF class {class} at offset 0x4: expected 2 (ELFCLASS64); \
         32-bit ELF cores are not supported"
    )]
    ElfClass { class: u8 },
    #[error("ELF data encoding {data} at offset 0x5: expected 1 (little-endian)")]
    ElfByteOrder { data: u8 },
    #[error("ELF e_type {e_type} at offset 0x10: expected 4 (ET_CORE), this is not a core file")]
    ElfNotCore { e_type: u16 },
    #[error("ELF e_phentsize {phentsize} at offset 0x36: expected at least 56")]
    ElfProgramHeaderSize { phentsize: u64 },
    #[error(
        "ELF e_shentsize {shentsize} at offset 0x3a: expected at least 64 \
         (e_phnum is PN_XNUM, the count is in section header 0)"
    )]
    ElfSectionHeaderSize { shentsize: u64 },
    #[error(
        "ELF section header 0 at offset {offset:#x} (holding the program header count) \
         goes past the end of the file ({file_len:#x} bytes)"
    )]
    ElfSectionHeaderTruncated { offset: u64, file_len: u64 },
    #[error(
        "ELF program header table at offset {offset:#x} ({count} entries of {entry_size} \
         bytes) goes past the end of the file ({file_len:#x} bytes)"
    )]
    ElfProgramHeadersTruncated {
        offset: u64,
        count: u64,
        entry_size: u64,
        file_len: u64,
    },
    #[error("ELF core has no PT_LOAD segment with data ({phnum} program headers): no memory")]
    ElfNoLoadSegments { phnum: u64 },
    #[error(
        "segment {index}: {size:#x} bytes at file offset {offset:#x} go past the end of the \
         file ({file_len:#x} bytes); the image is truncated"
    )]
    SegmentTruncated {
        index: usize,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("segment {index}: physical address {physical:#x} + size {size:#x} overflows 64 bits")]
    SegmentAddressOverflow {
        index: usize,
        physical: u64,
        size: u64,
    },
    #[error(
        "segments {first} and {second} overlap in physical memory: \
         [{:#x}, {:#x}) and [{:#x}, {:#x})",
        first_range.0, first_range.1, second_range.0, second_range.1
    )]
    SegmentsOverlap {
        first: usize,
        second: usize,
        first_range: (u64, u64),
        second_range: (u64, u64),
    },
}

/// Why a snapshot file could not be opened.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Image { path: PathBuf, source: ImageError },
    #[error(
        "{}, the memory layout of {}: {source}",
        state.display(), vmem.display()
    )]
    Vmware {
        state: PathBuf,
        vmem: PathBuf,
        source: VmwareError,
    },
    #[error(
        "{} is a VMware state file; kds reads the memory from {} beside it, which cannot be \
         opened ({source}); memory stored inside a .vmsn itself is not supported",
        state.display(), vmem.display()
    )]
    VmemMissing {
        state: PathBuf,
        vmem: PathBuf,
        source: std::io::Error,
    },
}

/// Which VMware file `path` names, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmwareRole {
    Memory,
    State,
}

fn vmware_role(path: &Path) -> Option<VmwareRole> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "vmem" => Some(VmwareRole::Memory),
        "vmss" | "vmsn" => Some(VmwareRole::State),
        _ => None,
    }
}

/// Memory-map `path`, refusing empty files (mapping them fails on some systems).
fn map_file(path: &Path) -> Result<Storage, SnapshotError> {
    let io_err = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    if len == 0 {
        return Err(SnapshotError::Image {
            path: path.to_path_buf(),
            source: ImageError::Empty,
        });
    }
    // SAFETY: the mapping is read-only; like every mmap-based reader we rely on the file not
    // being truncated or rewritten while it is mapped.
    let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
    Ok(Storage::Mapped(map))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A physical memory capture (raw image or ELF core), memory-mapped and validated on open.
///
/// Reads borrow straight from the file: [`contiguous`](PhysicalImage::contiguous) and
/// [`page`](PhysicalImage::page) return slices of the mapping; a run lookup is a binary
/// search over the sorted runs.
///
/// ```
/// use kds_runtime::target::{PhysicalImage, ReadError};
/// let image = PhysicalImage::from_bytes(vec![7u8; 0x2000], "raw.bin".into())?;
/// let mut buf = [0u8; 4];
/// image.read_physical(0x1ffc, &mut buf)?;
/// assert_eq!(buf, [7; 4]);
/// assert_eq!(image.read_physical(0x2000, &mut buf), Err(ReadError::OutOfRange { address: 0x2000 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PhysicalImage {
    storage: Storage,
    format: ImageFormat,
    format_name: String,
    machine: Option<u16>,
    runs: Vec<Run>,
    captured_pages: u64,
    identity: TargetIdentity,
}

impl std::fmt::Debug for PhysicalImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysicalImage")
            .field("format", &self.format)
            .field("machine", &self.machine)
            .field("runs", &self.runs.len())
            .field("captured_pages", &self.captured_pages)
            .finish_non_exhaustive()
    }
}

impl PhysicalImage {
    /// Memory-maps and validates the image at `path`; the format comes from its first bytes,
    /// except for VMware files, known by their extension:
    ///
    /// - `x.vmem` is laid out by the regions of `x.vmss` (else `x.vmsn`) beside it; without
    ///   either, or when the state file has no regions, it is read as a raw image
    ///   ([`ImageFormat::VmwareFlat`]). A state file that cannot be parsed is an error.
    /// - `x.vmss` / `x.vmsn` opens `x.vmem` beside it, laid out by this state file.
    ///
    /// The file must not be modified while the image lives (the usual memory-map caveat).
    pub fn open(path: &Path) -> Result<PhysicalImage, SnapshotError> {
        match vmware_role(path) {
            Some(VmwareRole::Memory) => {
                let state = ["vmss", "vmsn"]
                    .iter()
                    .map(|ext| path.with_extension(ext))
                    .find(|p| p.is_file());
                Self::open_vmem(path, state.as_deref())
            }
            Some(VmwareRole::State) => {
                let vmem = path.with_extension("vmem");
                if let Err(source) = File::open(&vmem) {
                    return Err(SnapshotError::VmemMissing {
                        state: path.to_path_buf(),
                        vmem,
                        source,
                    });
                }
                Self::open_vmem(&vmem, Some(path))
            }
            None => {
                let storage = map_file(path)?;
                Self::new(storage, path.display().to_string()).map_err(|source| {
                    SnapshotError::Image {
                        path: path.to_path_buf(),
                        source,
                    }
                })
            }
        }
    }

    /// A `.vmem`, laid out by the state file `state` when it has regions, else flat.
    fn open_vmem(vmem: &Path, state: Option<&Path>) -> Result<PhysicalImage, SnapshotError> {
        let storage = map_file(vmem)?;
        let vmem_len = storage.bytes().len() as u64;
        let flat = vec![Run {
            physical: 0,
            file_offset: 0,
            length: vmem_len,
        }];
        let name = vmem.display().to_string();
        let Some(state) = state else {
            let format_name = format!(
                "{} (no {} or .vmsn beside it)",
                ImageFormat::VmwareFlat.name(),
                file_name(&vmem.with_extension("vmss"))
            );
            return Ok(Self::assemble(
                storage,
                ImageFormat::VmwareFlat,
                format_name,
                None,
                flat,
                name,
            ));
        };
        let vmware_err = |source| SnapshotError::Vmware {
            state: state.to_path_buf(),
            vmem: vmem.to_path_buf(),
            source,
        };
        let state_storage = map_file(state)?;
        let parsed = vmware::parse_state(state_storage.bytes()).map_err(vmware_err)?;
        let (format, detail, runs) = match parsed.regions {
            None => (
                ImageFormat::VmwareFlat,
                format!("{} has no memory regions", file_name(state)),
                flat,
            ),
            Some(regions) => (
                ImageFormat::Vmware,
                format!("regions from {}", file_name(state)),
                vmware::region_runs(&regions, vmem_len).map_err(vmware_err)?,
            ),
        };
        let format_name = format!("{} ({detail})", format.name());
        Ok(Self::assemble(
            storage,
            format,
            format_name,
            None,
            runs,
            name,
        ))
    }

    /// Validates an image held in memory; `name` is only for display.
    pub fn from_bytes(bytes: Vec<u8>, name: String) -> Result<PhysicalImage, ImageError> {
        Self::new(Storage::Owned(bytes), name)
    }

    /// Validates a `.vmem` held in memory with the bytes of its state file.
    ///
    /// ```
    /// use kds_runtime::target::{ImageFormat, PhysicalImage};
    /// // Magic 0xbed3bed3, one group "memory" whose tags start at 0x5c.
    /// let mut state = 0xbed3_bed3u32.to_le_bytes().to_vec();
    /// state.extend([0, 0, 0, 0, 1, 0, 0, 0]);
    /// let mut group = [0u8; 80];
    /// group[..6].copy_from_slice(b"memory");
    /// group[64..72].copy_from_slice(&0x5cu64.to_le_bytes());
    /// state.extend(group);
    /// // Tags: flags (index count << 6 | data size), name length, name, indices, data.
    /// let mut tag = |name: &str, index: Option<u32>, value: u32| {
    ///     state.extend([(u8::from(index.is_some()) << 6) | 4, name.len() as u8]);
    ///     state.extend(name.as_bytes());
    ///     state.extend(index.iter().flat_map(|i| i.to_le_bytes()));
    ///     state.extend(value.to_le_bytes());
    /// };
    /// tag("regionsCount", None, 1);
    /// tag("regionPPN", Some(0), 0x100); // physical page 0x100..
    /// tag("regionPageNum", Some(0), 0); // ..is at .vmem page 0
    /// tag("regionSize", Some(0), 2);
    /// state.extend([0, 0]);
    ///
    /// let image = PhysicalImage::from_vmware_bytes(vec![7; 0x2000], &state, "x.vmem".into())?;
    /// assert_eq!(image.format(), ImageFormat::Vmware);
    /// assert_eq!(image.page(0x101).map(|p| p[0]), Some(7));
    /// assert!(image.page(0).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_vmware_bytes(
        vmem: Vec<u8>,
        state: &[u8],
        name: String,
    ) -> Result<PhysicalImage, VmwareError> {
        let vmem_len = vmem.len() as u64;
        let parsed = vmware::parse_state(state)?;
        let (format, runs) = match parsed.regions {
            None => (
                ImageFormat::VmwareFlat,
                vec![Run {
                    physical: 0,
                    file_offset: 0,
                    length: vmem_len,
                }],
            ),
            Some(regions) => (
                ImageFormat::Vmware,
                vmware::region_runs(&regions, vmem_len)?,
            ),
        };
        let format_name = format.name().to_string();
        Ok(Self::assemble(
            Storage::Owned(vmem),
            format,
            format_name,
            None,
            runs,
            name,
        ))
    }

    fn new(storage: Storage, name: String) -> Result<PhysicalImage, ImageError> {
        let bytes = storage.bytes();
        if bytes.is_empty() {
            return Err(ImageError::Empty);
        }
        for signature in ["PAGEDU64", "PAGEDUMP"] {
            if bytes.starts_with(signature.as_bytes()) {
                return Err(ImageError::CrashDump { signature });
            }
        }
        if vmware::is_state_file(bytes) {
            let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            return Err(ImageError::VmwareState { magic });
        }
        let (format, machine, runs) = if bytes.starts_with(elf::ELF_MAGIC) {
            let core = elf::parse(bytes)?;
            (ImageFormat::ElfCore, Some(core.machine), core.runs)
        } else {
            let run = Run {
                physical: 0,
                file_offset: 0,
                length: bytes.len() as u64,
            };
            (ImageFormat::Raw, None, vec![run])
        };
        let format_name = format.name().to_string();
        Ok(Self::assemble(
            storage,
            format,
            format_name,
            machine,
            runs,
            name,
        ))
    }

    /// The image from validated runs.
    fn assemble(
        storage: Storage,
        format: ImageFormat,
        format_name: String,
        machine: Option<u16>,
        runs: Vec<Run>,
        name: String,
    ) -> PhysicalImage {
        let captured_pages = count_pages(&runs);
        // Not from `e_machine`: QEMU writes EM_386 whenever the vCPU is outside long mode at
        // dump time (a guest stopped in real mode, a 32-bit boot stage), whatever the OS is.
        // The paging mode is decided by discovery, which validates page tables.
        let arch = Arch::X64;
        let identity = TargetIdentity {
            kind: TargetKind::Snapshot {
                path: name,
                format: format_name.clone(),
            },
            arch,
            os_build: None,
            checked_build: false,
            kernel_base: None,
            ps_loaded_module_list: None,
            ps_active_process_head: None,
            kd_debugger_data_block: None,
            pfn_database: None,
            directory_table_base: 0,
            bugcheck: None,
            processor_count: 0,
            system_time: None,
            system_up_time: None,
            comment: None,
            consistency: Consistency::MayBeInconsistent,
            discovery: Vec::new(),
        };
        PhysicalImage {
            storage,
            format,
            format_name,
            machine,
            runs,
            captured_pages,
            identity,
        }
    }

    /// The whole file.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    #[must_use]
    pub fn format(&self) -> ImageFormat {
        self.format
    }

    /// "raw physical image", "ELF core (QEMU/libvirt)", or for VMware the format with where
    /// its layout came from: "VMware .vmem (regions from x.vmss)".
    #[must_use]
    pub fn format_name(&self) -> &str {
        &self.format_name
    }

    /// The ELF header's `e_machine` ([`EM_X86_64`], [`EM_386`], ...); `None` for raw images.
    #[must_use]
    pub fn machine(&self) -> Option<u16> {
        self.machine
    }

    /// Captured physical memory, sorted by physical address, never overlapping.
    #[must_use]
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Number of distinct 4 KiB physical pages with at least one captured byte.
    #[must_use]
    pub fn captured_pages(&self) -> u64 {
        self.captured_pages
    }

    /// One past the highest captured physical address.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.runs.last().map_or(0, Run::end)
    }

    /// The run holding `address`, if any.
    fn run_at(&self, address: u64) -> Option<&Run> {
        let i = self.runs.partition_point(|r| r.physical <= address);
        let run = self.runs.get(i.checked_sub(1)?)?;
        (address < run.end()).then_some(run)
    }

    fn missing(&self, address: u64) -> ReadError {
        if address >= self.end() {
            ReadError::OutOfRange { address }
        } else {
            ReadError::PageNotCaptured {
                page: address & !(PAGE_SIZE - 1),
            }
        }
    }

    /// Zero-copy: the captured bytes from `address` to the end of its run.
    pub fn contiguous(&self, address: u64) -> Result<&[u8], ReadError> {
        let run = self.run_at(address).ok_or_else(|| self.missing(address))?;
        // Validated on open: the run lies inside the file, so these fit in usize.
        let start = (run.file_offset + (address - run.physical)) as usize;
        let end = (run.file_offset + run.length) as usize;
        self.bytes()
            .get(start..end)
            .ok_or_else(|| ReadError::Transport {
                address,
                reason: format!("run at file offset {start:#x}..{end:#x} is outside the file"),
            })
    }

    /// Zero-copy: the 4096 bytes of physical page `pfn`, when one run holds all of them.
    #[must_use]
    pub fn page(&self, pfn: u64) -> Option<&[u8]> {
        let address = pfn.checked_mul(PAGE_SIZE)?;
        self.contiguous(address).ok()?.get(..PAGE_SIZE as usize)
    }

    /// Fill `buf` from physical memory at `address`. On error `buf` holds the bytes before the
    /// address the error names.
    pub fn read_physical(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut done = 0usize;
        while done < buf.len() {
            let cur = address
                .checked_add(done as u64)
                .ok_or(ReadError::OutOfRange { address })?;
            let src = self.contiguous(cur)?;
            let n = src.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&src[..n]);
            done += n;
        }
        Ok(())
    }
}

/// Distinct pages touched by sorted, non-overlapping runs (two runs may share a page when
/// they are not page-aligned).
fn count_pages(runs: &[Run]) -> u64 {
    let mut count = 0u64;
    let mut next_uncounted = 0u64;
    for run in runs {
        let first = (run.physical / PAGE_SIZE).max(next_uncounted);
        let last = (run.end() - 1) / PAGE_SIZE;
        if last >= first {
            count += last - first + 1;
        }
        next_uncounted = next_uncounted.max(last + 1);
    }
    count
}

impl Target for PhysicalImage {
    fn identity(&self) -> &TargetIdentity {
        &self.identity
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            consistency: Consistency::MayBeInconsistent,
            can_resume: false,
            can_write: false,
        }
    }

    fn read_physical(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        PhysicalImage::read_physical(self, address, buf)
    }

    fn processor_context(&self, processor: u32) -> Result<ProcessorContext, TargetError> {
        Err(TargetError::ContextUnavailable {
            processor,
            reason: format!(
                "a {} holds memory only, no register state{}",
                self.format_name(),
                match self.format {
                    ImageFormat::ElfCore => " (ELF notes are not read)",
                    ImageFormat::Vmware | ImageFormat::VmwareFlat => {
                        " (the state file's cpu group is not read)"
                    }
                    ImageFormat::Raw => "",
                }
            ),
        })
    }

    fn captured_pages(&self) -> Option<u64> {
        Some(self.captured_pages)
    }

    fn captured_pfns(&self) -> Option<Vec<u64>> {
        let mut pfns: Vec<u64> = Vec::new();
        for run in &self.runs {
            let first = run.physical / PAGE_SIZE;
            let last = (run.end() - 1) / PAGE_SIZE;
            let from = pfns.last().map_or(first, |&p| first.max(p + 1));
            pfns.extend(from..=last);
        }
        Some(pfns)
    }
}

#[cfg(test)]
mod tests;
