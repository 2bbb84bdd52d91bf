//! A walk over a GGUF header's metadata that finds `general.alignment` before candle's reader
//! runs: candle divides by it unchecked, so a zero there would be a panic rather than an error.

use std::io::{Read, Seek, SeekFrom};

/// The `general.alignment` of a GGUF header, when the header has one and is well-formed up to that
/// key (anything else is left to candle's reader, which reports it).
pub(crate) fn header_alignment(reader: &mut (impl Read + Seek)) -> std::io::Result<Option<u64>> {
    let file_size = reader.seek(SeekFrom::End(0))?;
    reader.rewind()?;
    let mut word = [0u8; 4];
    if file_size < 8 {
        return Ok(None);
    }
    reader.read_exact(&mut word)?;
    if &word != b"GGUF" {
        return Ok(None);
    }
    reader.read_exact(&mut word)?;
    // Version 1 has 32-bit counts and lengths.
    let wide = u32::from_le_bytes(word) >= 2;
    let mut header = HeaderReader {
        reader,
        wide,
        file_size,
    };
    let (Some(_tensors), Some(entries)) = (header.length()?, header.length()?) else {
        return Ok(None);
    };
    for _ in 0..entries {
        let Some(key) = header.string()? else {
            return Ok(None);
        };
        let Some(kind) = header.u32()? else {
            return Ok(None);
        };
        if key == "general.alignment" {
            return header.integer(kind);
        }
        if !header.skip_value(kind, 0)? {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Walks a GGUF header's metadata without keeping it; every read is `None` past the end of the file.
struct HeaderReader<'a, R> {
    reader: &'a mut R,
    wide: bool,
    file_size: u64,
}

impl<R: Read + Seek> HeaderReader<'_, R> {
    /// `N` bytes, or `None` when the file ends first.
    fn bytes<const N: usize>(&mut self) -> std::io::Result<Option<[u8; N]>> {
        if !self.fits(N as u64)? {
            return Ok(None);
        }
        let mut b = [0u8; N];
        self.reader.read_exact(&mut b)?;
        Ok(Some(b))
    }

    fn fits(&mut self, n: u64) -> std::io::Result<bool> {
        let at = self.reader.stream_position()?;
        Ok(at.checked_add(n).is_some_and(|end| end <= self.file_size))
    }

    fn u32(&mut self) -> std::io::Result<Option<u32>> {
        Ok(self.bytes::<4>()?.map(u32::from_le_bytes))
    }

    fn length(&mut self) -> std::io::Result<Option<u64>> {
        if self.wide {
            Ok(self.bytes::<8>()?.map(u64::from_le_bytes))
        } else {
            Ok(self.u32()?.map(u64::from))
        }
    }

    /// Skips `n` bytes; false when they run past the end of the file.
    fn skip(&mut self, n: u64) -> std::io::Result<bool> {
        if !self.fits(n)? {
            return Ok(false);
        }
        self.reader.seek(SeekFrom::Current(n as i64))?;
        Ok(true)
    }

    /// A string short enough to be a key; a longer one (skipped) reads as an empty string.
    fn string(&mut self) -> std::io::Result<Option<String>> {
        let Some(len) = self.length()? else {
            return Ok(None);
        };
        if len > 256 {
            return Ok(self.skip(len)?.then(String::new));
        }
        if !self.fits(len)? {
            return Ok(None);
        }
        let mut bytes = vec![0u8; len as usize];
        self.reader.read_exact(&mut bytes)?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// A non-negative integer of ggml metadata type `kind`; `None` for another type or a negative.
    fn integer(&mut self, kind: u32) -> std::io::Result<Option<u64>> {
        let (size, signed) = match kind {
            0 => (1, false),
            1 => (1, true),
            2 => (2, false),
            3 => (2, true),
            4 => (4, false),
            5 => (4, true),
            10 => (8, false),
            11 => (8, true),
            _ => return Ok(None),
        };
        if !self.fits(size as u64)? {
            return Ok(None);
        }
        let mut b = [0u8; 8];
        self.reader.read_exact(&mut b[..size])?;
        let negative = signed && b[size - 1] & 0x80 != 0;
        Ok((!negative).then(|| u64::from_le_bytes(b)))
    }

    /// Skips a value of ggml metadata type `kind`; false for an unknown type, an array nested too
    /// deep, or a value that runs past the end of the file.
    fn skip_value(&mut self, kind: u32, depth: usize) -> std::io::Result<bool> {
        let fixed = |kind: u32| match kind {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        if let Some(size) = fixed(kind) {
            return self.skip(size);
        }
        let Some(len) = (match kind {
            8 => self.length()?,
            9 if depth < 8 => {
                let Some(item) = self.u32()? else {
                    return Ok(false);
                };
                let Some(len) = self.length()? else {
                    return Ok(false);
                };
                if let Some(size) = fixed(item) {
                    return self.skip(len.saturating_mul(size));
                }
                for _ in 0..len {
                    if !self.skip_value(item, depth + 1)? {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            _ => return Ok(false),
        }) else {
            return Ok(false);
        };
        self.skip(len)
    }
}
