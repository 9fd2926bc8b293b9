//! Paths of a namespace's tree: absolute, `/`-separated, checked once where they
//! enter (a request) so the tree only ever holds valid ones.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ServiceError;
use crate::limits::Limit;

/// A valid absolute path: `/` (the root) or `/` followed by one or more segments
/// separated by single `/`, with no trailing `/`. A segment is not empty, not `.` or
/// `..`, and holds no control characters. Cheap to clone.
///
/// Paths order by depth, then by text: the children of a dir are then contiguous
/// (they share the dir's depth + 1 and its prefix), and ordered by name, so a tree
/// keyed by path lists a dir's children by a range, not by walking its subtree.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Path {
    /// Segments: 0 for the root.
    // Invariant: depth == the number of '/' in text, but 0 for "/".
    depth: u32,
    text: Arc<str>,
}

impl Path {
    /// The root directory, `/`.
    pub fn root() -> Path {
        Path {
            depth: 0,
            text: Arc::from("/"),
        }
    }

    fn from_text(text: &str) -> Path {
        let depth = if text == "/" {
            0
        } else {
            text.bytes().filter(|&b| b == b'/').count() as u32
        };
        Path {
            depth,
            text: Arc::from(text),
        }
    }

    /// The lowest path of depth `depth` starting with `prefix` (not itself a valid
    /// path): where a range over the children of a dir starts.
    pub(crate) fn range_start(depth: u32, prefix: &str) -> Path {
        Path {
            depth,
            text: Arc::from(prefix),
        }
    }

    /// Checks `text` and makes it a path. `path_bytes_max` bounds its length.
    pub fn parse(text: &str, path_bytes_max: u32) -> Result<Path, ServiceError> {
        let invalid = |why: String| ServiceError::InvalidPath {
            path: text.chars().take(200).collect(),
            why,
        };
        Limit::PathBytes.check(u64::from(path_bytes_max), text.len() as u64)?;
        let Some(rest) = text.strip_prefix('/') else {
            return Err(invalid("a path is absolute: it starts with '/'".into()));
        };
        if rest.is_empty() {
            return Ok(Path::root());
        }
        for segment in rest.split('/') {
            if segment.is_empty() {
                return Err(invalid(
                    "empty segment: no '//' and no '/' at the end".into(),
                ));
            }
            if segment == "." || segment == ".." {
                return Err(invalid(format!(
                    "segment '{segment}': '.' and '..' are not allowed (paths are absolute)"
                )));
            }
            if let Some(c) = segment.chars().find(|c| c.is_control()) {
                return Err(invalid(format!(
                    "control character {c:?}: a segment holds printable characters only"
                )));
            }
        }
        Ok(Path::from_text(text))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Segments: 0 for the root.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.depth == 0
    }

    /// The directory holding this path; `None` for the root.
    pub fn parent(&self) -> Option<Path> {
        if self.is_root() {
            return None;
        }
        let cut = self.text.rfind('/').expect("a valid path starts with '/'");
        Some(if cut == 0 {
            Path::root()
        } else {
            Path {
                depth: self.depth - 1,
                text: Arc::from(&self.text[..cut]),
            }
        })
    }

    /// The last segment (empty for the root).
    pub fn name(&self) -> &str {
        let cut = self.text.rfind('/').expect("a valid path starts with '/'");
        &self.text[cut + 1..]
    }

    /// The child `name` of this directory path. `name` must be a valid segment.
    pub fn child(&self, name: &str) -> Path {
        debug_assert!(!name.is_empty() && !name.contains('/'));
        Path {
            depth: self.depth + 1,
            text: Arc::from(format!("{}{name}", self.descendant_prefix())),
        }
    }

    /// The prefix every descendant's path starts with (`/a/` for `/a`, `/` for the
    /// root).
    pub fn descendant_prefix(&self) -> String {
        if self.is_root() {
            "/".to_string()
        } else {
            format!("{}/", self.text)
        }
    }

    /// Every ancestor, nearest first, ending with the root.
    pub fn ancestors(&self) -> impl Iterator<Item = Path> {
        std::iter::successors(self.parent(), Path::parent)
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.text)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for Path {
    type Error = ServiceError;

    /// Checks the path's form only (decoding a command): the length limit is the
    /// tree's to check.
    fn try_from(text: String) -> Result<Path, ServiceError> {
        Path::parse(&text, u32::MAX)
    }
}

impl From<Path> for String {
    fn from(path: Path) -> String {
        path.text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the parser accepts the forms the tree uses and rejects each malformed
    // kind with a reason that names it.
    #[test]
    fn paths_parse_and_malformed_ones_say_why() {
        for good in ["/", "/a", "/a/b", "/a b/c.d", "/ünï/cödé"] {
            assert_eq!(Path::parse(good, 100).unwrap().as_str(), good);
        }
        for (bad, why) in [
            ("", "absolute"),
            ("a/b", "absolute"),
            ("/a/", "empty segment"),
            ("//a", "empty segment"),
            ("/a//b", "empty segment"),
            ("/a/./b", "'.'"),
            ("/a/..", "'..'"),
            ("/a\nb", "control character"),
        ] {
            let error = Path::parse(bad, 100).unwrap_err().to_string();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        let long = format!("/{}", "x".repeat(100));
        assert_eq!(
            Path::parse(&long, 100).unwrap_err(),
            ServiceError::LimitExceeded {
                limit: Limit::PathBytes,
                max: 100,
                actual: 101
            }
        );
    }

    #[test]
    fn parents_names_and_children_agree() {
        let path = Path::parse("/a/b/c", 100).unwrap();
        assert_eq!(path.name(), "c");
        assert_eq!(path.parent().unwrap().as_str(), "/a/b");
        assert_eq!(
            path.ancestors().map(String::from).collect::<Vec<_>>(),
            ["/a/b", "/a", "/"]
        );
        assert_eq!(Path::root().parent(), None);
        assert_eq!(Path::root().child("x").as_str(), "/x");
        assert_eq!(path.child("d").as_str(), "/a/b/c/d");
        assert_eq!(path.descendant_prefix(), "/a/b/c/");
        assert_eq!(path.depth(), 3);
        assert_eq!(path.child("d").depth(), 4);
        assert_eq!(Path::root().child("x").depth(), 1);
        assert_eq!(Path::root().descendant_prefix(), "/");
    }
}
