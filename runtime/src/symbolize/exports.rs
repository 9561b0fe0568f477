//! A mapped image's export table, read from target memory: the symbols a debugger falls back
//! to when it has no PDB for a module ("export symbols").

use crate::kernel::MappedImage;
use crate::mmu::AddressSpace;
use crate::pe::{parse_headers, PeError};
use thiserror::Error;

/// Most names an export table may list before the rest are ignored (ntdll has ~2 500).
const MAX_EXPORTS: u32 = 0x1_0000;
/// Longest export name read.
const MAX_NAME: usize = 512;

/// Why an export table could not be read.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error("cannot read the export directory of the image at {base:#x}: {reason}")]
    Unreadable { base: u64, reason: String },
}

/// One named export: its RVA and name. Forwarders (RVAs inside the export directory, which
/// name another DLL's function) are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub rva: u32,
    pub name: String,
}

/// The named exports of the image mapped at `base`, sorted by RVA. An image without an export
/// directory has none. Names whose bytes are not in memory are skipped.
pub fn read_exports(space: &AddressSpace, base: u64) -> Result<Vec<Export>, ExportError> {
    let image = parse_headers(&MappedImage { space, base })?;
    let Some((dir_rva, dir_size)) = image.export_directory else {
        return Ok(Vec::new());
    };
    let unreadable = |reason: String| ExportError::Unreadable { base, reason };
    let mut dir = [0u8; 40];
    space
        .read(base + u64::from(dir_rva), &mut dir)
        .map_err(|e| unreadable(e.to_string()))?;
    let word = |at: usize| u32::from_le_bytes([dir[at], dir[at + 1], dir[at + 2], dir[at + 3]]);
    let functions = word(0x14).min(MAX_EXPORTS);
    let names = word(0x18).min(MAX_EXPORTS);
    let (functions_rva, names_rva, ordinals_rva) = (word(0x1c), word(0x20), word(0x24));

    let table = |rva: u32, count: u32, width: usize| -> Result<Vec<u8>, ExportError> {
        let mut bytes = vec![0u8; count as usize * width];
        space
            .read(base + u64::from(rva), &mut bytes)
            .map_err(|e| unreadable(e.to_string()))?;
        Ok(bytes)
    };
    let function_rvas = table(functions_rva, functions, 4)?;
    let name_rvas = table(names_rva, names, 4)?;
    let ordinals = table(ordinals_rva, names, 2)?;

    let mut out = Vec::with_capacity(names as usize);
    for i in 0..names as usize {
        let ordinal = usize::from(u16::from_le_bytes([ordinals[2 * i], ordinals[2 * i + 1]]));
        let Some(f) = function_rvas.get(4 * ordinal..4 * ordinal + 4) else {
            continue;
        };
        let rva = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
        let forwarder = rva >= dir_rva && rva < dir_rva.saturating_add(dir_size);
        if rva == 0 || forwarder {
            continue;
        }
        let n = &name_rvas[4 * i..4 * i + 4];
        let name_rva = u32::from_le_bytes([n[0], n[1], n[2], n[3]]);
        if let Some(name) = read_name(space, base + u64::from(name_rva)) {
            out.push(Export { rva, name });
        }
    }
    out.sort_by(|a, b| a.rva.cmp(&b.rva).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// A NUL-terminated ASCII name, read up to the end of its page at a time.
fn read_name(space: &AddressSpace, at: u64) -> Option<String> {
    let mut name = Vec::new();
    let mut cursor = at;
    while name.len() < MAX_NAME {
        let page_left = (0x1000 - (cursor & 0xfff)) as usize;
        let mut chunk = vec![0u8; page_left.min(MAX_NAME - name.len())];
        space.read(cursor, &mut chunk).ok()?;
        if let Some(end) = chunk.iter().position(|&b| b == 0) {
            name.extend_from_slice(&chunk[..end]);
            return (!name.is_empty() && name.is_ascii())
                .then(|| String::from_utf8_lossy(&name).into_owned());
        }
        name.extend_from_slice(&chunk);
        cursor += chunk.len() as u64;
    }
    None
}
