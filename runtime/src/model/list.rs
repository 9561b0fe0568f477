//! Bounded, checked walks of `LIST_ENTRY` lists.
//!
//! A walk never loops and never reads unboundedly: it stops at the head, at a repeated
//! entry (cycle), at the bound, at an unreadable or null link, or at a torn link (an entry
//! whose `Flink->Blink` is not itself). Whatever stopped it early becomes a [`ListWarning`]
//! naming the addresses involved; the entries read before it are kept.

use super::ModelError;
use crate::mmu::AddressSpace;
use crate::symbols::{SymbolTable, TypeRef};
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;

/// Where the links of a list live: the `LIST_ENTRY` field in its container, and `Flink` /
/// `Blink` inside `_LIST_ENTRY`, all from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListLayout {
    /// Offset of the link field in the container structure.
    pub link_offset: u64,
    pub flink_offset: u64,
    pub blink_offset: u64,
    pub entry_size: u64,
    pub pointer_size: u64,
}

impl ListLayout {
    /// The layout of `container_type.link_field` (dotted paths through embedded structures
    /// allowed: `Tcb.ThreadListEntry`).
    pub fn new(
        table: &SymbolTable,
        container_type: &str,
        link_field: &str,
    ) -> Result<ListLayout, ModelError> {
        let link = table.field(container_type, link_field)?;
        let entry_type = match &link.ty {
            TypeRef::User(name) => name.clone(),
            other => {
                return Err(ModelError::Unsupported {
                    type_name: format!("{container_type}.{link_field}"),
                    address: 0,
                    reason: format!(
                        "a list link must be a structure, not a {}",
                        other.kind_name()
                    ),
                })
            }
        };
        let mut layout = ListLayout::of_entry(table, &entry_type)?;
        layout.link_offset = link.offset;
        Ok(layout)
    }

    /// The layout of a bare `_LIST_ENTRY` chain (link offset 0).
    pub fn of_entry(table: &SymbolTable, entry_type: &str) -> Result<ListLayout, ModelError> {
        let flink_offset = table.offset_of(entry_type, "Flink")?;
        let blink_offset = table.offset_of(entry_type, "Blink")?;
        // A table without a pointer base type: Flink and Blink are adjacent pointers, so the
        // distance between them is the pointer width.
        let pointer_size = match table.pointer_size() {
            0 => blink_offset.abs_diff(flink_offset),
            n => n,
        };
        Ok(ListLayout {
            link_offset: 0,
            flink_offset,
            blink_offset,
            entry_size: table.size_of(entry_type)?,
            pointer_size,
        })
    }
}

/// What stopped a walk early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ListProblem {
    /// The `LIST_ENTRY` at `entry` (reached from `linked_from`'s Flink) cannot be read.
    Unreadable {
        entry: u64,
        linked_from: u64,
        error: String,
    },
    /// The `LIST_ENTRY` at `entry` has a null Flink.
    NullLink { entry: u64 },
    /// The Flink of `entry` is `flink`, but `flink`'s Blink is `back`, not `entry`.
    Torn { entry: u64, flink: u64, back: u64 },
    /// The Flink of `entry` is `flink`, an entry already walked.
    Cycle { entry: u64, flink: u64 },
    /// The walk read `bound` entries and the list went on.
    Bound { bound: usize, next: u64 },
}

/// A problem found in a list, with where the list starts and how far the walk got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListWarning {
    /// What list this is (`PsActiveProcessHead`, `threads of process 4`).
    pub list: String,
    pub head: u64,
    /// Entries read before the problem.
    pub entries_before: usize,
    pub problem: ListProblem,
    /// Width of the list's pointers: addresses in the message print at it.
    #[serde(skip)]
    pub pointer_size: u64,
}

impl fmt::Display for ListWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = |address: u64| super::format_address(address, self.pointer_size);
        write!(
            f,
            "list {} (head {}), after {} entries: ",
            self.list,
            addr(self.head),
            self.entries_before
        )?;
        match &self.problem {
            ListProblem::Unreadable {
                entry,
                linked_from,
                error,
            } => write!(
                f,
                "the entry {} (the Flink of {}) cannot be read: {error}",
                addr(*entry),
                addr(*linked_from)
            ),
            ListProblem::NullLink { entry } => {
                write!(f, "the Flink of {} is null", addr(*entry))
            }
            ListProblem::Torn { entry, flink, back } => write!(
                f,
                "torn link: the Flink of {} is {}, whose Blink is {} (not {})",
                addr(*entry),
                addr(*flink),
                addr(*back),
                addr(*entry)
            ),
            ListProblem::Cycle { entry, flink } => write!(
                f,
                "cycle: the Flink of {} is {}, an entry already walked",
                addr(*entry),
                addr(*flink)
            ),
            ListProblem::Bound { bound, next } => write!(
                f,
                "stopped at the bound of {bound} entries (next entry {})",
                addr(*next)
            ),
        }
    }
}

/// The result of a walk: container addresses in list order, and what went wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListWalk {
    pub head: u64,
    /// Addresses of the containing structures (entry address − link offset).
    pub entries: Vec<u64>,
    pub warnings: Vec<ListWarning>,
}

impl ListWalk {
    /// True when the walk came back to the head with nothing to report.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.warnings.is_empty()
    }
}

/// Walk the list whose head `LIST_ENTRY` is at `head`, returning at most `max` entries.
#[must_use]
pub fn walk_list_raw(
    space: &AddressSpace,
    head: u64,
    layout: &ListLayout,
    max: usize,
    list: &str,
) -> ListWalk {
    let mut walk = ListWalk {
        head,
        ..ListWalk::default()
    };
    let warn = |walk: &mut ListWalk, problem: ListProblem| {
        let entries_before = walk.entries.len();
        walk.warnings.push(ListWarning {
            list: list.to_string(),
            head,
            entries_before,
            problem,
            pointer_size: layout.pointer_size,
        });
    };
    let (first, head_blink) = match read_links(space, head, layout) {
        Ok(links) => links,
        Err(error) => {
            warn(
                &mut walk,
                ListProblem::Unreadable {
                    entry: head,
                    linked_from: head,
                    error,
                },
            );
            return walk;
        }
    };
    let mut seen = HashSet::from([head]);
    let mut previous = head;
    let mut current = first;
    loop {
        if current == head {
            if head_blink != previous {
                warn(
                    &mut walk,
                    ListProblem::Torn {
                        entry: previous,
                        flink: head,
                        back: head_blink,
                    },
                );
            }
            break;
        }
        if current == 0 {
            warn(&mut walk, ListProblem::NullLink { entry: previous });
            break;
        }
        if seen.contains(&current) {
            warn(
                &mut walk,
                ListProblem::Cycle {
                    entry: previous,
                    flink: current,
                },
            );
            break;
        }
        if walk.entries.len() >= max {
            warn(
                &mut walk,
                ListProblem::Bound {
                    bound: max,
                    next: current,
                },
            );
            break;
        }
        let (next, back) = match read_links(space, current, layout) {
            Ok(links) => links,
            Err(error) => {
                warn(
                    &mut walk,
                    ListProblem::Unreadable {
                        entry: current,
                        linked_from: previous,
                        error,
                    },
                );
                break;
            }
        };
        if back != previous {
            warn(
                &mut walk,
                ListProblem::Torn {
                    entry: previous,
                    flink: current,
                    back,
                },
            );
            break;
        }
        seen.insert(current);
        walk.entries.push(current.wrapping_sub(layout.link_offset));
        previous = current;
        current = next;
    }
    walk
}

/// (Flink, Blink) of the `LIST_ENTRY` at `at`, in one read.
fn read_links(space: &AddressSpace, at: u64, layout: &ListLayout) -> Result<(u64, u64), String> {
    let size = usize::try_from(layout.entry_size).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; size];
    space.read(at, &mut buf).map_err(|e| e.to_string())?;
    let pointer = |offset: u64| -> Result<u64, String> {
        let start = usize::try_from(offset).map_err(|e| e.to_string())?;
        let width = usize::try_from(layout.pointer_size).map_err(|e| e.to_string())?;
        buf.get(start..start + width)
            .map(|b| super::object::le_unsigned(b) as u64)
            .ok_or_else(|| format!("link at offset {offset:#x} lies outside the LIST_ENTRY"))
    };
    Ok((pointer(layout.flink_offset)?, pointer(layout.blink_offset)?))
}
