//! Parser for `/proc/PID/maps`.

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r`, `w`, `x`, `p`/`s` as in the file.
    pub perms: [u8; 4],
    /// File offset of `start`.
    pub offset: u64,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Inode (0 for anonymous mappings).
    pub inode: u64,
    /// Path, pseudo name (`[vdso]`, `[heap]`) or empty; a ` (deleted)` suffix is removed.
    pub path: String,
    /// The file was deleted after it was mapped.
    pub deleted: bool,
}

impl MapEntry {
    /// Executable mapping.
    pub fn is_exec(&self) -> bool {
        self.perms[2] == b'x'
    }

    /// Backed by a file (not anonymous, not a `[pseudo]` mapping).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// Parses one line; `None` when malformed.
pub fn parse_maps_line(line: &str) -> Option<MapEntry> {
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let trimmed = rest.trim_start_matches(' ');
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (f, r) = trimmed.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let path = rest.trim_start_matches(' ');
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let perms: [u8; 4] = perms.as_bytes().try_into().ok()?;
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms,
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev_major: u32::from_str_radix(major, 16).ok()?,
        dev_minor: u32::from_str_radix(minor, 16).ok()?,
        inode: inode.parse().ok()?,
        path: path.to_string(),
        deleted,
    })
}

/// Parses the whole file, skipping malformed lines.
pub fn parse_maps(content: &str) -> Vec<MapEntry> {
    content.lines().filter_map(parse_maps_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let m = parse_maps_line(
            "55d0c5a00000-55d0c5a02000 r-xp 00002000 08:01 1234567                    /usr/bin/my prog (deleted)",
        )
        .unwrap();
        assert_eq!(
            (m.start, m.end, m.offset),
            (0x55d0c5a00000, 0x55d0c5a02000, 0x2000)
        );
        assert_eq!((m.dev_major, m.dev_minor, m.inode), (8, 1, 1234567));
        assert_eq!(m.path, "/usr/bin/my prog");
        assert!(m.deleted && m.is_exec() && m.is_file());
        let v = parse_maps_line(
            "7ffd4b9e0000-7ffd4b9e2000 r-xp 00000000 00:00 0                          [vdso]",
        )
        .unwrap();
        assert_eq!(v.path, "[vdso]");
        assert!(!v.is_file());
        let anon = parse_maps_line("7f0000000000-7f0000001000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, "");
        let nodev = parse_maps_line("7f0000000000-7f0000001000 r-xp 00000000 fd:1a 42 /x").unwrap();
        assert_eq!((nodev.dev_major, nodev.dev_minor), (0xfd, 0x1a));
        assert!(parse_maps_line("garbage").is_none());
        assert!(parse_maps_line("zz-10 r-xp 0 00:00 0").is_none());
        assert_eq!(parse_maps("a-b r-xp 0 00:00 0\n\nbad\n").len(), 1);
    }
}
