//! A VCF or BCF file's bytes, decompressed.
//!
//! - **BGZF** (what `bgzip`, `bcftools` and every indexed VCF use) is read block by block
//!   with noodles-bgzf, which inflates each block whole with libdeflate: in 0.6 of the
//!   time zlib-rs's streaming inflater took (3.5% → 2.1% of a large ingest's CPU).
//! - **Other gzip** (one stream, or several members) goes through flate2's streaming
//!   decoder.
//! - Anything else is read as it is.
//!
//! A damaged stream must end the file's records, never pass for a malformed line: the
//! readers above treat `InvalidData` as one bad line and read on, so errors from the
//! decompression layer come out as `ErrorKind::Other` (a block checksum mismatch, a corrupt
//! deflate stream) or as they were (`UnexpectedEof` for a block cut short). A BGZF file
//! cut exactly between blocks would otherwise end cleanly, so its end-of-file block (which
//! every BGZF writer appends) is checked for.

use std::io::{self, BufRead, BufReader, Read};

/// The empty block that ends a BGZF file (SAMv1 §4.1.2).
const BGZF_EOF: [u8; 28] = [
    0x1f, 0x8b, 0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x06, 0x00, 0x42, 0x43, 0x02, 0x00,
    0x1b, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// `raw`'s content, decompressed when it is gzip or BGZF.
pub fn decompressed(raw: Box<dyn Read + Send>) -> io::Result<Box<dyn BufRead + Send>> {
    let mut raw = BufReader::with_capacity(1 << 20, raw);
    let start = raw.fill_buf()?;
    if is_bgzf(start) {
        let blocks = noodles::bgzf::io::Reader::new(Tail::new(raw));
        Ok(Box::new(Bgzf { blocks }))
    } else if start.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::bufread::MultiGzDecoder::new(raw);
        Ok(Box::new(StreamErrors(BufReader::with_capacity(
            1 << 20,
            gz,
        ))))
    } else {
        Ok(Box::new(raw))
    }
}

/// A gzip member header with BGZF's `BC` extra subfield (its block size).
fn is_bgzf(start: &[u8]) -> bool {
    start.len() >= 18
        && start[..4] == [0x1f, 0x8b, 0x08, 0x04]
        && start[10..12] == [6, 0]
        && start[12..14] == *b"BC"
        && start[14..16] == [2, 0]
}

/// `InvalidData` from below becomes `Other`: see the module docs.
fn stream_error(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::InvalidData {
        io::Error::other(e)
    } else {
        e
    }
}

/// A reader that remembers the last 28 bytes it passed on, for the end-of-file check.
struct Tail<R> {
    inner: R,
    last: Vec<u8>,
}

impl<R> Tail<R> {
    fn new(inner: R) -> Self {
        Tail {
            inner,
            last: Vec::with_capacity(2 * BGZF_EOF.len()),
        }
    }

    fn ends_with_eof_block(&self) -> bool {
        self.last.ends_with(&BGZF_EOF)
    }
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        if got.len() >= BGZF_EOF.len() {
            self.last.clear();
            self.last
                .extend_from_slice(&got[got.len() - BGZF_EOF.len()..]);
        } else {
            self.last.extend_from_slice(got);
            let extra = self.last.len().saturating_sub(BGZF_EOF.len());
            self.last.drain(..extra);
        }
        Ok(n)
    }
}

struct Bgzf<R> {
    blocks: noodles::bgzf::io::Reader<Tail<R>>,
}

impl<R: Read> BufRead for Bgzf<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let at_end = self.blocks.fill_buf().map_err(stream_error)?.is_empty();
        if at_end && !self.blocks.get_ref().ends_with_eof_block() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ends without BGZF's end-of-file block: it was cut short",
            ));
        }
        self.blocks.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.blocks.consume(amt);
    }
}

impl<R: Read> Read for Bgzf<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let src = self.fill_buf()?;
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// A buffered stream whose errors are passed through [`stream_error`].
struct StreamErrors<R>(R);

impl<R: BufRead> BufRead for StreamErrors<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf().map_err(stream_error)
    }

    fn consume(&mut self, amt: usize) {
        self.0.consume(amt);
    }
}

impl<R: BufRead> Read for StreamErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(stream_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgzip(text: &[u8], block: usize) -> Vec<u8> {
        use std::io::Write;
        let mut w = noodles::bgzf::io::Writer::new(Vec::new());
        for part in text.chunks(block) {
            w.write_all(part).unwrap();
            w.flush().unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decompressed(Box::new(io::Cursor::new(bytes)))?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn text() -> Vec<u8> {
        (0..20_000)
            .flat_map(|i| format!("chr1\t{i}\t.\tA\tG\t50\tPASS\tDP={}\n", i % 97).into_bytes())
            .collect()
    }

    #[test]
    fn bgzf_gzip_and_plain_read_the_same() {
        let text = text();
        let bgzf = bgzip(&text, 5_000);
        assert!(is_bgzf(&bgzf));
        assert_eq!(read_all(bgzf.clone()).unwrap(), text);
        // Concatenated BGZF files (each with its end block) read as one.
        let mut twice = bgzf.clone();
        twice.extend_from_slice(&bgzf);
        assert_eq!(
            read_all(twice).unwrap(),
            [text.clone(), text.clone()].concat()
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &text).unwrap();
        let gz = gz.finish().unwrap();
        assert!(!is_bgzf(&gz));
        assert_eq!(read_all(gz).unwrap(), text);
        assert_eq!(read_all(text.clone()).unwrap(), text);
    }

    #[test]
    fn a_cut_or_damaged_bgzf_file_is_an_error_not_an_end() {
        let text = text();
        let bgzf = bgzip(&text, 5_000);
        // Cut at a block boundary: every block is whole, only the end block is missing.
        let cut = &bgzf[..bgzf.len() - BGZF_EOF.len()];
        let e = read_all(cut.to_vec()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        // Cut inside a block's data, and inside the last data block's header.
        let mut starts = vec![0usize];
        while let Some(&at) = starts.last().filter(|&&at| at < bgzf.len()) {
            starts.push(at + usize::from(u16::from_le_bytes([bgzf[at + 16], bgzf[at + 17]])) + 1);
        }
        let last_data_block = starts[starts.len() - 3];
        for at in [bgzf.len() / 2, last_data_block + 5] {
            assert!(read_all(bgzf[..at].to_vec()).is_err(), "cut at {at}");
        }
        // A flipped bit in the first block's data: its checksum no longer matches, and the
        // error is not `InvalidData` (which the VCF reader would take for one bad line).
        let mut bad = bgzf.clone();
        bad[40] ^= 0x10;
        let e = read_all(bad).unwrap_err();
        assert_ne!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
