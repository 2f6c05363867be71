//! Validation of file names that come from the peer.
//!
//! A [`SafeName`] is the proof that a name passed every rule below; only
//! [`SafeName::parse`] builds one (rustls-style proof type), and every function of this layer
//! that creates something in the destination takes a `&SafeName`, never a `&str`.
//!
//! Rules (docs/FILES.md, "Names"), each a refusal of the peer's name:
//! - non-empty, at most [`PATH_MAX`] bytes, at most [`MAX_COMPONENTS`] components, each at
//!   most [`NAME_MAX`] bytes;
//! - relative: no leading `/`;
//! - no NUL, no control character (C0, DEL, C1: terminal escape injection, the scp
//!   CVE-2019-6109 class, when names are printed);
//! - no `..`, no `.`, no empty component (`a//b`, trailing `/`);
//! - no component ending in our reserved suffixes (`.haul-partial`, `.haul-partial.ckpt`,
//!   `.haul-partial.ckpt.tmp`), so a peer cannot overwrite another file's partial or checkpoint.
//!
//! A backslash is an ordinary character on Linux and is allowed. Symlink components cannot be
//! judged from the name alone; the destination refuses them when resolving (`dest.rs`).

use std::fmt;
use thiserror::Error;

/// Longest name in bytes (Linux PATH_MAX counts the terminating NUL).
pub const PATH_MAX: usize = 4095;
/// Longest component in bytes (Linux NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Most components in one name.
pub const MAX_COMPONENTS: usize = 64;
/// Suffixes this layer uses for its own files; a peer's name may not end in one.
pub const RESERVED_SUFFIXES: [&str; 3] =
    [".haul-partial", ".haul-partial.ckpt", ".haul-partial.ckpt.tmp"];

/// Why a name from the peer was refused (always the peer's fault).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name contains a NUL byte")]
    Nul,
    #[error("the name contains a control character at byte {at}")]
    ControlChar { at: usize },
    #[error("the name is absolute")]
    Absolute,
    #[error("the name has a '..' component")]
    DotDot,
    #[error("the name has a '.' component")]
    Dot,
    #[error("the name has an empty component ('//' or a trailing '/')")]
    EmptyComponent,
    #[error("the name is {len} bytes long (at most {PATH_MAX})")]
    TooLong { len: usize },
    #[error("a component is {len} bytes long (at most {NAME_MAX})")]
    ComponentTooLong { len: usize },
    #[error("the name has more than {MAX_COMPONENTS} components")]
    TooManyComponents,
    #[error("a component ends in a suffix reserved for partial files")]
    Reserved,
}

/// A relative name that passed validation. Cheap to clone; compares as its string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafeName {
    name: String,
}

impl SafeName {
    /// Validates `name` against every rule of this module.
    pub fn parse(name: &str) -> Result<SafeName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > PATH_MAX {
            return Err(NameError::TooLong { len: name.len() });
        }
        if name.as_bytes().contains(&0) {
            return Err(NameError::Nul);
        }
        if let Some((at, _)) = name.char_indices().find(|(_, c)| c.is_control()) {
            return Err(NameError::ControlChar { at });
        }
        if name.starts_with('/') {
            return Err(NameError::Absolute);
        }
        for (count, component) in name.split('/').enumerate() {
            if count >= MAX_COMPONENTS {
                return Err(NameError::TooManyComponents);
            }
            check_component(component)?;
        }
        Ok(SafeName { name: name.to_owned() })
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The last component: the file's own name.
    pub fn file_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    /// The directory components, outermost first (empty for a name without `/`).
    pub fn dir_components(&self) -> impl Iterator<Item = &str> + '_ {
        let dirs = self.name.rsplit_once('/').map_or("", |(dirs, _)| dirs);
        dirs.split('/').filter(|c| !c.is_empty())
    }
}

impl fmt::Display for SafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

fn check_component(component: &str) -> Result<(), NameError> {
    match component {
        "" => Err(NameError::EmptyComponent),
        "." => Err(NameError::Dot),
        ".." => Err(NameError::DotDot),
        c if c.len() > NAME_MAX => Err(NameError::ComponentTooLong { len: c.len() }),
        c if RESERVED_SUFFIXES.iter().any(|s| c.ends_with(s)) => Err(NameError::Reserved),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(name: &str) -> NameError {
        SafeName::parse(name).unwrap_err()
    }

    #[test]
    fn accepts_plain_relative_names() {
        for ok in ["a", "a/b/c", "dir/file.bin", "a\\b", ".hidden", "a/.b", "..a", "a..", "é/ü"] {
            let n = SafeName::parse(ok).unwrap();
            assert_eq!(n.as_str(), ok);
        }
        let n = SafeName::parse("x/y/z.bin").unwrap();
        assert_eq!(n.file_name(), "z.bin");
        assert_eq!(n.dir_components().collect::<Vec<_>>(), ["x", "y"]);
        let n = SafeName::parse("z").unwrap();
        assert_eq!(n.dir_components().count(), 0);
    }

    #[test]
    fn refuses_hostile_names() {
        assert_eq!(refused(""), NameError::Empty);
        assert_eq!(refused("../x"), NameError::DotDot);
        assert_eq!(refused("a/../../x"), NameError::DotDot);
        assert_eq!(refused("a/.."), NameError::DotDot);
        assert_eq!(refused(".."), NameError::DotDot);
        assert_eq!(refused("/etc/x"), NameError::Absolute);
        assert_eq!(refused("/"), NameError::Absolute);
        assert_eq!(refused("a/./b"), NameError::Dot);
        assert_eq!(refused("."), NameError::Dot);
        assert_eq!(refused("a//b"), NameError::EmptyComponent);
        assert_eq!(refused("a/"), NameError::EmptyComponent);
        assert_eq!(refused("a\0b"), NameError::Nul);
        assert_eq!(refused("a\x1b[2Jb"), NameError::ControlChar { at: 1 });
        assert_eq!(refused("a\u{9b}b"), NameError::ControlChar { at: 1 });
        assert_eq!(refused("x.haul-partial"), NameError::Reserved);
        assert_eq!(refused("d/.x.haul-partial.ckpt"), NameError::Reserved);
        assert_eq!(refused(".x.haul-partial.ckpt.tmp/y"), NameError::Reserved);
    }

    #[test]
    fn enforces_length_limits() {
        let long_component = "a".repeat(NAME_MAX + 1);
        assert_eq!(refused(&long_component), NameError::ComponentTooLong { len: NAME_MAX + 1 });
        assert!(SafeName::parse(&"a".repeat(NAME_MAX)).is_ok());

        let long_path = vec!["b".repeat(200); 21].join("/");
        assert!(long_path.len() > PATH_MAX);
        assert_eq!(refused(&long_path), NameError::TooLong { len: long_path.len() });

        let deep_ok = vec!["d"; MAX_COMPONENTS].join("/");
        assert!(SafeName::parse(&deep_ok).is_ok());
        let too_deep = vec!["d"; MAX_COMPONENTS + 1].join("/");
        assert_eq!(refused(&too_deep), NameError::TooManyComponents);

        let huge = "x".repeat(1 << 20);
        assert_eq!(refused(&huge), NameError::TooLong { len: 1 << 20 });
    }

    #[test]
    fn never_panics_on_odd_strings() {
        for s in ["\u{0}", "/\u{0}", "////", "a/b/", "\u{feff}", "a/\u{7f}", "🦀/🦀"] {
            let _ = SafeName::parse(s);
        }
    }
}
