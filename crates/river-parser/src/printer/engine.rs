//! The token writer behind the formatter: it receives tokens (with their source position when
//! known), symbolic whitespace and the file's comments, and produces raw output for the
//! [`tabwriter`](super::tabwriter) stage.
//!
//! Whitespace is buffered and only written before the next token, so nothing dangles at the end
//! of the file. Before each token every comment that starts at or before the token's source
//! position is written first, with spacing derived from the source lines of the comment, the last
//! written text and the next token. Positions of tokens written without an explicit position are
//! estimated from the end of the previous token, as the reference printer does.

use super::tabwriter::ESC;
use crate::ast::Comment;
use crate::span::LineIndex;

/// A position in source space; `line == 0` means unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    pub offset: usize,
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn valid(self) -> bool {
        self.line > 0
    }
}

/// Symbolic whitespace, applied when the next token is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ws {
    /// Dropped entry.
    Ignore,
    /// A space.
    Blank,
    /// A soft cell break: text before it is aligned with the lines around it.
    VTab,
    /// A line break that keeps the current alignment section.
    Newline,
    /// A line break that ends the alignment section.
    Formfeed,
    Indent,
    Unindent,
}

impl Ws {
    fn byte(self) -> Option<u8> {
        match self {
            Ws::Blank => Some(b' '),
            Ws::VTab => Some(b'\x0b'),
            Ws::Newline => Some(b'\n'),
            Ws::Formfeed => Some(b'\x0c'),
            Ws::Ignore | Ws::Indent | Ws::Unindent => None,
        }
    }
}

/// What kind of text was written last; decides whether two tokens need a space between them so
/// they are not scanned back as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ident,
    /// An integer literal.
    Number,
    /// Any other literal.
    Literal,
    /// An operator or punctuation.
    Punct,
    /// Whitespace was queued after the last token.
    Space,
}

const MAX_PENDING_WS: usize = 16;
const MAX_NEWLINES: isize = 2;

pub(crate) struct Engine<'a> {
    index: LineIndex,
    src_len: usize,
    comments: &'a [Comment],
    next_comment: usize,
    out: Vec<u8>,
    indent: usize,
    last_kind: Kind,
    last_text_was_div: bool,
    ws: Vec<Ws>,
    /// Estimated source position of the next token.
    pos: Pos,
    /// Source position just after the last written text (token or comment).
    last: Pos,
    /// Output column (1-based) of the raw output; indentation is written at column 1.
    out_col: usize,
    /// Line breaks written so far.
    lines: usize,
    /// Set while comments pulled out of a block header wait to be written: the header's start
    /// offset and line. Those comments are spaced as if they sat on the header's first line.
    header: Option<(usize, usize)>,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(src: &str, comments: &'a [Comment]) -> Self {
        Engine {
            index: LineIndex::new(src),
            src_len: src.len(),
            comments,
            next_comment: 0,
            out: Vec::with_capacity(src.len() + 64),
            indent: 0,
            last_kind: Kind::Space,
            last_text_was_div: false,
            ws: Vec::with_capacity(MAX_PENDING_WS),
            pos: Pos {
                offset: 0,
                line: 1,
                col: 1,
            },
            last: Pos::default(),
            out_col: 1,
            lines: 0,
            header: None,
        }
    }

    /// The number of line breaks written so far (pending whitespace not included).
    pub(crate) fn lines_written(&self) -> usize {
        self.lines
    }

    /// The source position of byte `offset`.
    pub(crate) fn at(&self, offset: usize) -> Pos {
        let offset = offset.min(self.src_len);
        let line0 = self.index.line_of(offset);
        Pos {
            offset,
            line: line0 + 1,
            col: offset - self.index.line_start(line0) + 1,
        }
    }

    /// 1-based source line of byte `offset`.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.index.line_of(offset.min(self.src_len)) + 1
    }

    /// Sets the source position of the next token.
    pub(crate) fn set_pos(&mut self, offset: usize) {
        self.pos = self.at(offset);
    }

    /// Sets the source position of the next token to `offset`, and makes every comment that
    /// starts before `pull_until` be written before that token (the token then follows the last
    /// of those comments on its own line for a line comment, after a space for a block comment).
    /// Used for block headers, where a comment between the name and `{` cannot stay in place.
    pub(crate) fn set_pos_pulling_comments(&mut self, offset: usize, pull_until: usize) {
        let mut pos = self.at(offset);
        let pulled = self.comments[self.next_comment..]
            .iter()
            .take_while(|c| c.span.start < pull_until)
            .last();
        if let Some(c) = pulled {
            self.header = Some((offset, pos.line));
            let text = comment_text(c);
            pos.offset = pos.offset.max(c.span.start);
            pos.line = pos
                .line
                .max(self.line(c.span.start + text.len().saturating_sub(1)));
        }
        self.pos = pos;
    }

    pub(crate) fn ws(&mut self, w: Ws) {
        if self.ws.len() == MAX_PENDING_WS {
            self.write_ws(MAX_PENDING_WS);
        }
        self.ws.push(w);
        self.last_kind = Kind::Space;
        self.last_text_was_div = false;
    }

    /// Writes one token's text.
    pub(crate) fn token(&mut self, text: &str, kind: Kind) {
        if kind == Kind::Punct && self.ws.is_empty() {
            let first = text.as_bytes().first().copied();
            let combines = (self.last_kind == Kind::Number && first == Some(b'.'))
                || (self.last_text_was_div && first == Some(b'*'));
            if combines {
                self.ws.push(Ws::Blank);
            }
        }
        self.last_kind = kind;
        self.last_text_was_div = kind == Kind::Punct && text == "/";
        let next = self.pos;
        self.flush(next, false);
        self.header = None;
        // Literal text goes through the alignment stage like any other text, unless it holds
        // characters that stage would reinterpret (cell breaks, or blanks it would trim).
        let opaque = matches!(kind, Kind::Literal | Kind::Number)
            && (text.contains(['\t', '\x0b', '\x0c']) || text.contains(" \n"));
        self.write_string(next, text, opaque);
    }

    /// Writes every remaining comment; trailing whitespace is dropped.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let end = Pos {
            offset: usize::MAX,
            line: usize::MAX,
            col: usize::MAX,
        };
        self.flush(end, true);
        self.out
    }

    fn comment_before(&self, next: Pos) -> bool {
        self.comments
            .get(self.next_comment)
            .is_some_and(|c| c.span.start <= next.offset)
    }

    fn flush(&mut self, next: Pos, eof: bool) {
        if self.comment_before(next) {
            self.inject_comments(next, eof);
        } else if !eof {
            self.write_ws(self.ws.len());
        }
    }

    fn inject_comments(&mut self, next: Pos, eof: bool) {
        let mut last_comment = None;
        while self.comment_before(next) {
            let c = &self.comments[self.next_comment];
            self.next_comment += 1;
            self.comment_prefix(next, c);
            let text = comment_text(c);
            self.write_string(self.at(c.span.start), text, true);
            last_comment = Some(c);
        }
        if let Some(c) = last_comment {
            if !eof {
                self.comment_suffix(next, c);
            }
        }
    }

    /// Whitespace between the last written text and comment `c`.
    fn comment_prefix(&mut self, next: Pos, c: &Comment) {
        let mut cpos = self.at(c.span.start);
        if let Some((start, line)) = self.header {
            if c.span.start >= start {
                // The first comment pulled out of a block header: space it from the previous
                // text as the header would have been, then space the rest from it.
                cpos.line = cpos.line.min(line);
                self.header = None;
            }
        }
        if self.out.is_empty() {
            return;
        }
        if cpos.line == self.last.line {
            // A comment on the line of the last token: a cell break, so trailing comments of a
            // run of lines line up; a plain space when the next token follows on this line.
            let sep = if cpos.line == next.line { b' ' } else { b'\t' };
            self.write_byte(sep, 1);
            return;
        }
        // Apply pending indentation up to the first real whitespace, which is dropped in favour
        // of the line breaks written here.
        let mut count = 0;
        for (i, w) in self.ws.iter_mut().enumerate() {
            match *w {
                Ws::Indent | Ws::Unindent => continue,
                Ws::Blank | Ws::VTab | Ws::Newline | Ws::Formfeed => *w = Ws::Ignore,
                Ws::Ignore => {}
            }
            count = i;
            break;
        }
        self.write_ws(count);
        if cpos.valid() && self.last.valid() {
            let newlines = cpos.line as isize - self.last.line as isize;
            if newlines > 0 {
                self.write_byte(b'\x0c', newlines.min(MAX_NEWLINES) as usize);
            }
        }
    }

    /// Whitespace between the last comment `c` and the next token.
    fn comment_suffix(&mut self, next: Pos, c: &Comment) {
        let text = comment_text(c);
        let is_block = text.as_bytes().get(1) == Some(&b'*');
        let end_line = self.line(c.span.start + text.len().saturating_sub(1));
        if is_block && next.line == end_line {
            self.write_byte(b' ', 1);
        }
        let mut newlines = next.line as isize - self.last.line as isize;
        let mut dropped_ff = false;
        for w in self.ws.iter_mut() {
            match *w {
                Ws::Blank | Ws::VTab | Ws::Newline => *w = Ws::Ignore,
                Ws::Formfeed => {
                    dropped_ff = true;
                    *w = Ws::Ignore;
                }
                Ws::Indent | Ws::Unindent | Ws::Ignore => {}
            }
        }
        self.write_ws(self.ws.len());
        if !is_block && newlines < 1 {
            // A line comment always ends its line, whatever the estimated positions say.
            newlines = 1;
        }
        if newlines > 0 {
            let ch = if dropped_ff { b'\x0c' } else { b'\n' };
            self.write_byte(ch, newlines.min(MAX_NEWLINES) as usize);
        }
    }

    fn write_string(&mut self, pos: Pos, s: &str, opaque: bool) {
        if self.out_col == 1 {
            self.write_indent();
        }
        if pos.valid() {
            self.pos = pos;
        }
        if opaque {
            self.out.push(ESC);
        }
        self.out.extend_from_slice(s.as_bytes());
        if opaque {
            self.out.push(ESC);
        }
        let mut newlines = 0;
        let mut last_nl = 0;
        // Only '\n' ends a source line; a form feed inside a comment or string is plain text.
        for (i, b) in s.bytes().enumerate() {
            if b == b'\n' {
                newlines += 1;
                last_nl = i;
            }
        }
        self.pos.offset += s.len();
        self.lines += newlines;
        if newlines > 0 {
            self.pos.line += newlines;
            self.pos.col = s.len() - last_nl;
            self.out_col = s.len() - last_nl;
        } else {
            self.pos.col += s.len();
            self.out_col += s.len();
        }
        self.last = self.pos;
    }

    fn write_indent(&mut self) {
        let depth = self.indent;
        self.out.extend(std::iter::repeat_n(b'\t', depth));
        self.pos.offset += depth;
        self.pos.col += depth;
        self.out_col += depth;
    }

    fn write_byte(&mut self, ch: u8, n: usize) {
        if self.out_col == 1 {
            self.write_indent();
        }
        self.out.extend(std::iter::repeat_n(ch, n));
        self.pos.offset += n;
        if ch == b'\n' || ch == b'\x0c' {
            self.lines += n;
            self.pos.line += n;
            self.pos.col = 1;
            self.out_col = 1;
        } else {
            self.pos.col += n;
            self.out_col += n;
        }
    }

    /// Writes the first `n` pending whitespace entries.
    fn write_ws(&mut self, n: usize) {
        for i in 0..n {
            let w = self.ws[i];
            match w {
                Ws::Indent => self.indent += 1,
                Ws::Unindent => self.indent = self.indent.saturating_sub(1),
                _ => {
                    if let Some(b) = w.byte() {
                        self.write_byte(b, 1);
                    }
                }
            }
        }
        self.ws.drain(..n);
    }
}

/// A comment's text without a trailing carriage return.
fn comment_text(c: &Comment) -> &str {
    if c.text.starts_with("//") {
        c.text.trim_end_matches(['\r', '\n'])
    } else {
        &c.text
    }
}
