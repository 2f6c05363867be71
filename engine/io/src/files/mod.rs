//! File semantics for transfers: names from the peer, the destination, partial files,
//! checkpoints and resume, overwrite policy, the sender's walk, and free space.
//!
//! Role: the receiver's and sender's file layer, called by the transfer runtime from its shard
//! and coordinator threads. docs/FILES.md is the manual.
//!
//! Invariants:
//! - A name from the peer is used only as a [`names::SafeName`], and only beneath a
//!   [`dest::DestRoot`] through openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS.
//! - A file reaches its final name only by an atomic rename of its partial file, after its data
//!   and attributes are durable (`partial.rs`).
//! - Data is fdatasync'ed before any checkpoint that covers it (`checkpoint.rs`).
//! - Nothing here panics on any input; errors are [`FileError`] and name the file, the
//!   operation and the cause. No `unsafe`: the system calls go through rustix.

pub mod batch;
pub mod checkpoint;
pub mod dest;
pub mod error;
pub mod names;
pub mod partial;
pub mod pause;
pub mod plan;
pub mod policy;
pub mod space;
pub mod walk;
pub mod xattr;

pub use batch::{BatchOutcome, FinalizeBatch, MAX_FINALIZE_BATCH, PER_FILE_SYNC_MAX};
pub use checkpoint::{
    Checkpoint, CheckpointWriter, FileIdentity, FingerprintKind, Leftover, Loaded, ResumeLevel,
    ResumePlan, StartOver, checkpoint_interval_bytes, fingerprint, load_leftover,
};
pub use dest::{DestRoot, DirCache, ExistingFile, ParentDir};
pub use error::{Fault, FileError, Op};
pub use names::{NameError, SafeName};
pub use partial::{FinalAttrs, Finalized, IoMode, PartialFile, PartialOptions, Prealloc};
pub use plan::{Action, FilePlan, SourceHints, plan_file, plan_file_cached};
pub use policy::{
    ChecksumCompare, Decision, Overwrite, SkipReason, SourceFile, decide, hash_existing,
};
pub use space::{FsSpace, check_space, free_space, human_bytes};
pub use walk::{SourceEntry, Walk, WalkNote, walk, walk_with_limit};
pub use xattr::{SourceXattrs, read_xattrs};
