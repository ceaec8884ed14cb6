//! The pretty printer behind [`Snapshot::to_json_string`](super::Snapshot::to_json_string):
//! a `serde_json` formatter that keeps arrays of numbers on one line.

use std::io::{self, Write};

/// A pretty-printing JSON formatter that keeps arrays of scalars on one line: objects and arrays
/// of containers are indented like `serde_json`'s pretty printer, `[1.0, 2.5, 0.0]` stays inline.
///
/// The separator before an array element is written only once the element's kind is known
/// (`pending`), because `begin_array_value` is called before the element starts.
#[derive(Default)]
pub(super) struct NumberArraysInline {
    indent: usize,
    /// `Some(first)` between `begin_array_value` and the start of that element.
    pending: Option<bool>,
    /// One entry per open array: whether it has been broken over lines.
    arrays: Vec<bool>,
    /// One entry per open object: whether it has a key.
    objects: Vec<bool>,
}

impl NumberArraysInline {
    fn newline<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..self.indent {
            w.write_all(b"  ")?;
        }
        Ok(())
    }

    /// Writes the separator owed before a value that is a container (`true`) or a scalar.
    fn before_value<W: ?Sized + Write>(&mut self, w: &mut W, container: bool) -> io::Result<()> {
        let Some(first) = self.pending.take() else {
            return Ok(());
        };
        let multiline = match self.arrays.last_mut() {
            Some(broken) => {
                *broken |= container;
                *broken
            }
            None => container,
        };
        if !first {
            w.write_all(b",")?;
        }
        if multiline {
            self.newline(w)
        } else if first {
            Ok(())
        } else {
            w.write_all(b" ")
        }
    }
}

macro_rules! scalar_writers {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<W: ?Sized + Write>(&mut self, w: &mut W, value: $ty) -> io::Result<()> {
                self.before_value(w, false)?;
                serde_json::ser::CompactFormatter.$method(w, value)
            }
        )*
    };
}

impl serde_json::ser::Formatter for NumberArraysInline {
    scalar_writers!(
        write_bool(bool),
        write_i8(i8),
        write_i16(i16),
        write_i32(i32),
        write_i64(i64),
        write_i128(i128),
        write_u8(u8),
        write_u16(u16),
        write_u32(u32),
        write_u64(u64),
        write_u128(u128),
        write_f32(f32),
        write_f64(f64),
        write_number_str(&str),
        write_raw_fragment(&str),
    );

    fn write_null<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.before_value(w, false)?;
        w.write_all(b"null")
    }

    fn begin_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.before_value(w, false)?;
        w.write_all(b"\"")
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.before_value(w, true)?;
        self.indent += 1;
        self.arrays.push(false);
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.indent = self.indent.saturating_sub(1);
        if self.arrays.pop().unwrap_or(false) {
            self.newline(w)?;
        }
        w.write_all(b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, _w: &mut W, first: bool) -> io::Result<()> {
        self.pending = Some(first);
        Ok(())
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.before_value(w, true)?;
        self.indent += 1;
        self.objects.push(false);
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.indent = self.indent.saturating_sub(1);
        if self.objects.pop().unwrap_or(false) {
            self.newline(w)?;
        }
        w.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if let Some(has_key) = self.objects.last_mut() {
            *has_key = true;
        }
        if !first {
            w.write_all(b",")?;
        }
        self.newline(w)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        Ok(())
    }
}
