//! A snapshot as a target: the image's bytes, with the page-table root and the kernel base that
//! header-less discovery found, and how it found them.

use super::PhysicalImage;
use crate::discovery::{discover, Discovery, DiscoveryError, DiscoveryLimits};
use crate::target::{
    Capabilities, ProcessorContext, ReadError, Target, TargetError, TargetIdentity,
};
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Why a snapshot could not be opened as a target.
#[derive(Debug, Error)]
pub enum SnapshotOpenError {
    #[error(transparent)]
    Image(#[from] super::SnapshotError),
    #[error("{path}: {source}")]
    Discovery {
        path: String,
        #[source]
        source: DiscoveryError,
    },
}

/// A memory image (raw, ELF core, VMware `.vmem`) with its kernel found by scanning.
pub struct SnapshotTarget {
    image: Arc<PhysicalImage>,
    identity: TargetIdentity,
    discovery: Discovery,
}

impl SnapshotTarget {
    /// Open the image and run discovery (DTB, then the kernel image) over it.
    pub fn open(path: &Path) -> Result<SnapshotTarget, SnapshotOpenError> {
        let image = Arc::new(PhysicalImage::open(path)?);
        let as_target: Arc<dyn Target> = image.clone();
        let discovery = discover(&as_target, &DiscoveryLimits::default()).map_err(|source| {
            SnapshotOpenError::Discovery {
                path: path.display().to_string(),
                source,
            }
        })?;
        let mut identity = image.identity().clone();
        identity.arch = discovery.arch();
        identity.directory_table_base = discovery.dtb.dtb;
        identity.kernel_base = Some(discovery.kernel.base);
        identity.discovery = discovery.how();
        Ok(SnapshotTarget {
            image,
            identity,
            discovery,
        })
    }

    /// What discovery found, and how.
    #[must_use]
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// The image underneath.
    #[must_use]
    pub fn image(&self) -> &PhysicalImage {
        &self.image
    }
}

impl Target for SnapshotTarget {
    fn identity(&self) -> &TargetIdentity {
        &self.identity
    }

    fn capabilities(&self) -> Capabilities {
        self.image.capabilities()
    }

    fn read_physical(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.image.read_physical(address, buf)
    }

    fn processor_context(&self, processor: u32) -> Result<ProcessorContext, TargetError> {
        self.image.processor_context(processor)
    }

    fn captured_pages(&self) -> Option<u64> {
        Some(self.image.captured_pages())
    }

    fn captured_pfns(&self) -> Option<Vec<u64>> {
        self.image.captured_pfns()
    }
}
