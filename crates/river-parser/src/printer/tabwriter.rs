//! Elastic tabstops and trailing-whitespace trimming for the printer's raw output.
//!
//! The printer emits text in which `\t` and `\v` end a cell, `\n` ends a line and `\f` ends a line
//! and a section (no column crosses it). Cells of a column (a run of consecutive lines having a
//! cell at that index) are padded with spaces to the widest cell plus one; leading empty cells
//! (indentation) become tabs. Text between two [`ESC`] bytes is opaque: it is neither split into
//! cells nor trimmed, and the markers themselves have no width. Finally trailing blanks are removed
//! from every line and the markers are dropped. This mirrors the semantics of Go's `text/tabwriter`
//! with padding 1, tab width 8, `TabIndent` and `DiscardEmptyColumns`, which the reference River
//! printer relies on.

/// Brackets opaque text. Never valid inside UTF-8, so it cannot clash with real text.
pub(crate) const ESC: u8 = 0xFF;

const TAB_WIDTH: usize = 8;
const PADDING: usize = 1;

#[derive(Debug, Clone, Copy)]
struct Cell {
    start: usize,
    end: usize,
    /// Display width in characters, escape markers excluded.
    width: usize,
    /// Terminated by `\t` (a "hard" tab) rather than `\v`.
    htab: bool,
}

struct Section<'a> {
    buf: &'a [u8],
    lines: Vec<Vec<Cell>>,
    /// Whether the final line of this section ends with a line break.
    last_terminated: bool,
}

/// Aligns cells and trims trailing whitespace; returns the final text.
pub(crate) fn align_and_trim(raw: &[u8]) -> String {
    let aligned = align(raw);
    trim(&aligned)
}

fn char_width(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .filter(|&&b| b != ESC && (b & 0xC0) != 0x80)
        .count()
}

fn align(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 4);
    let mut lines: Vec<Vec<Cell>> = vec![Vec::new()];
    let mut cell_start = 0;
    let mut escaped = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if escaped {
            if b == ESC {
                escaped = false;
            }
            i += 1;
            continue;
        }
        match b {
            ESC => escaped = true,
            b'\t' | b'\x0b' | b'\n' | b'\x0c' => {
                let cell = Cell {
                    start: cell_start,
                    end: i,
                    width: char_width(&raw[cell_start..i]),
                    htab: b == b'\t',
                };
                if let Some(line) = lines.last_mut() {
                    line.push(cell);
                }
                cell_start = i + 1;
                if b == b'\n' || b == b'\x0c' {
                    if b == b'\x0c' {
                        let section = Section {
                            buf: raw,
                            lines: std::mem::take(&mut lines),
                            last_terminated: true,
                        };
                        section.write(&mut out);
                    }
                    lines.push(Vec::new());
                }
            }
            _ => {}
        }
        i += 1;
    }
    // The unterminated final line (an empty remainder is no cell at all).
    if cell_start < raw.len() {
        let tail = Cell {
            start: cell_start,
            end: raw.len(),
            width: char_width(&raw[cell_start..]),
            htab: false,
        };
        if let Some(line) = lines.last_mut() {
            line.push(tail);
        }
    }
    let section = Section {
        buf: raw,
        lines,
        last_terminated: false,
    };
    section.write(&mut out);
    out
}

impl Section<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let mut widths = Vec::new();
        self.format(out, &mut widths, 0, self.lines.len());
    }

    /// Formats lines `[line0, line1)` given the widths of the columns to the left.
    fn format(&self, out: &mut Vec<u8>, widths: &mut Vec<usize>, line0: usize, line1: usize) {
        let column = widths.len();
        let mut start = line0;
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            // A column block begins at `this`.
            self.write_lines(out, widths, start, this);
            start = this;
            let mut width = 0;
            let mut discardable = true;
            while this < line1 {
                let line = &self.lines[this];
                if column + 1 >= line.len() {
                    break;
                }
                let c = line[column];
                width = width.max(c.width + PADDING);
                if c.width > 0 || c.htab {
                    discardable = false;
                }
                this += 1;
            }
            if discardable {
                width = 0;
            }
            widths.push(width);
            self.format(out, widths, start, this);
            widths.pop();
            start = this;
        }
        self.write_lines(out, widths, start, line1);
    }

    fn write_lines(&self, out: &mut Vec<u8>, widths: &[usize], line0: usize, line1: usize) {
        for i in line0..line1 {
            let line = &self.lines[i];
            let mut use_tabs = true;
            for (j, c) in line.iter().enumerate() {
                if c.start == c.end {
                    if let Some(&w) = widths.get(j) {
                        pad(out, c.width, w, use_tabs);
                    }
                } else {
                    use_tabs = false;
                    out.extend_from_slice(&self.buf[c.start..c.end]);
                    if let Some(&w) = widths.get(j) {
                        pad(out, c.width, w, false);
                    }
                }
            }
            if i + 1 < self.lines.len() || self.last_terminated {
                out.push(b'\n');
            }
        }
    }
}

fn pad(out: &mut Vec<u8>, text_width: usize, cell_width: usize, use_tabs: bool) {
    if use_tabs {
        let cell_width = cell_width.div_ceil(TAB_WIDTH) * TAB_WIDTH;
        let n = cell_width.saturating_sub(text_width);
        out.extend(std::iter::repeat_n(b'\t', n.div_ceil(TAB_WIDTH)));
    } else {
        out.extend(std::iter::repeat_n(
            b' ',
            cell_width.saturating_sub(text_width),
        ));
    }
}

/// Drops escape markers and the blanks and tabs at the end of every line (and of the text).
fn trim(aligned: &[u8]) -> String {
    let mut out = Vec::with_capacity(aligned.len());
    let mut pending_space: Vec<u8> = Vec::new();
    let mut escaped = false;
    for &b in aligned {
        if escaped {
            if b == ESC {
                escaped = false;
            } else {
                out.push(b);
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\x0b' => pending_space.push(if b == b'\x0b' { b'\t' } else { b }),
            b'\n' | b'\x0c' => {
                pending_space.clear();
                out.push(b'\n');
            }
            ESC => {
                out.append(&mut pending_space);
                escaped = true;
            }
            _ => {
                out.append(&mut pending_space);
                out.push(b);
            }
        }
    }
    // Everything but the markers came from valid UTF-8 text.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_soft_columns_and_keeps_indentation_tabs() {
        let raw = b"\ta\x0b= 1\n\tlong\x0b= 2\x0c\tx\x0b= 3";
        assert_eq!(align_and_trim(raw), "\ta    = 1\n\tlong = 2\n\tx = 3");
    }

    #[test]
    fn trailing_comments_are_aligned_and_escaped_text_is_opaque() {
        let raw = b"a = 1\t\xff// x\t\xff\nbbb = 22\t\xff// y\xff";
        assert_eq!(align_and_trim(raw), "a = 1    // x\t\nbbb = 22 // y");
    }

    #[test]
    fn trims_trailing_blanks() {
        assert_eq!(align_and_trim(b"a  \n\t\nb\t"), "a\n\nb");
    }
}
