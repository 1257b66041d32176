//! Reading one DICOM header: bytes in, a parsed data set (or a reason it is not one) out.
//!
//! Only the header is parsed. A file is read a prefix at a time ([`PREFIX_BYTES`] first,
//! which holds almost every header), and dicom-rs parses exactly the bytes of the header:
//!
//! 1. the file meta group (if any) gives the transfer syntax; the data set's first element
//!    is checked against it, because some writers declare explicit VR and write implicit
//!    (pydicom makes the same check);
//! 2. a walk over the data set's element *headers* (dicom-rs's decoder, no values) finds
//!    where PixelData starts, and checks every declared length against the bytes that are
//!    really there. This is the guard against bogus lengths: dicom-rs reserves a value's
//!    declared length before reading it, so a 4 GiB length in a 1 KiB file would otherwise
//!    allocate 4 GiB. The walk also asks for more of the file only when the header needs it;
//! 3. dicom-rs parses the header bytes into an object;
//! 4. values written as UN (explicit VR with an unknown VR) are re-read with the VR the
//!    standard dictionary gives their tag, as PS3.5 §6.2.2 allows and pydicom does.
//!
//! A header cut short by the end of the file keeps the elements before the cut, and says
//! where and why in [`Header::warning`].

use std::io::{Cursor, Read};

use dicom_core::dictionary::DataDictionaryEntry;
use dicom_core::header::{DataElementHeader, HasLength, Header as _};
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataDictionary, DataElement, Length, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_encoding::text::SpecificCharacterSet;
use dicom_encoding::transfer_syntax::{Codec, Endianness, TransferSyntaxIndex};
use dicom_encoding::TransferSyntax;
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// How much of a file is read before parsing is first tried. Most headers are a few KiB
/// (a CT slice: about 2 KiB); longer ones cost one more read.
pub const PREFIX_BYTES: usize = 16 * 1024;

/// The largest header (everything before PixelData) medlake reads into memory. Real
/// headers are kilobytes; RT structure sets and big private blocks reach megabytes.
pub const MAX_HEADER_BYTES: usize = 256 * 1024 * 1024;

/// The file meta group is short (about 200 bytes); more than this is not a meta group.
const MAX_META_BYTES: usize = 64 * 1024;

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// A parsed header.
pub struct Header {
    pub obj: InMemDicomObject,
    pub transfer_syntax_uid: Option<String>,
    pub sop_instance_uid: String,
    /// Set when the header was cut short and only the elements before the cut were read.
    pub warning: Option<String>,
}

/// Why a file did not yield a header: a short kind for grouping, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// Bytes of a file, read on demand from its start, never past `size`.
pub struct Source<R> {
    reader: R,
    buf: Vec<u8>,
    size: u64,
    eof: bool,
    header_len: Option<usize>,
}

impl<R: Read> Source<R> {
    /// `size` is what the file system says; reads stop there even if the file grows.
    pub fn new(reader: R, size: u64) -> Self {
        Source {
            reader,
            buf: Vec::new(),
            size,
            eof: false,
            header_len: None,
        }
    }

    /// Make at least `n` bytes available, fewer only at the end of the file. Reads grow
    /// geometrically, so a long header costs few reads.
    fn fill_to(&mut self, n: usize) -> std::io::Result<()> {
        if self.buf.len() >= n || self.complete() {
            return Ok(());
        }
        let target = n
            .max(self.buf.len().saturating_mul(2))
            .max(PREFIX_BYTES)
            .min(usize::try_from(self.size).unwrap_or(usize::MAX));
        // One read call per fill where the reader allows: for an object store each call
        // is a ranged GET.
        let mut filled = self.buf.len();
        self.buf.resize(target, 0);
        while filled < target {
            match self.reader.read(&mut self.buf[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(filled);
                    return Err(e);
                }
            }
        }
        self.buf.truncate(filled);
        Ok(())
    }

    /// Whether every byte of the file is in the buffer.
    fn complete(&self) -> bool {
        self.eof || self.buf.len() as u64 >= self.size
    }

    /// The bytes read so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's bytes up to where its header ends (PixelData, or the end of what could
    /// be read): what the content fingerprint covers.
    pub fn header_bytes(&self) -> &[u8] {
        &self.buf[..self
            .header_len
            .unwrap_or(self.buf.len())
            .min(self.buf.len())]
    }
}

/// Read and parse the header of the file behind `src`.
pub fn read_header<R: Read>(src: &mut Source<R>) -> Result<Header, Failure> {
    let io = |e: std::io::Error| Failure::new("io", e.to_string());
    src.fill_to(PREFIX_BYTES).map_err(io)?;
    let bytes = src.bytes();
    let (meta_start, has_meta) = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        (132, true)
    } else if bytes.len() >= 4 && &bytes[0..4] == b"DICM" {
        (4, true)
    } else {
        (0, false)
    };

    let (meta, ds_start) = if has_meta {
        let meta = read_meta(&bytes[meta_start..])?;
        let end = meta_start + meta.len;
        (Some(meta), end)
    } else {
        (None, 0)
    };
    let declared = meta.as_ref().and_then(|m| m.transfer_syntax.clone());
    let media_uid = meta.as_ref().and_then(|m| m.media_sop_instance_uid.clone());

    let ts_uid = match &declared {
        Some(uid) => {
            let ts = TransferSyntaxRegistry.get(uid).ok_or_else(|| {
                Failure::new(
                    "unsupported_transfer_syntax",
                    format!("transfer syntax {uid} (0002,0010) is not known to medlake"),
                )
            })?;
            if is_deflated(ts) {
                return read_deflated(src, ds_start, ts, declared.clone(), media_uid);
            }
            // Trust the first data element over the declaration where they disagree.
            match sniff(&src.bytes()[ds_start..]) {
                Some(Layout::ExplicitLe) if uid == IMPLICIT_VR_LE => EXPLICIT_VR_LE,
                Some(Layout::ImplicitLe) if ts.endianness() == Endianness::Little => IMPLICIT_VR_LE,
                _ => ts.uid(),
            }
        }
        None => match sniff(bytes) {
            // No file meta group: a bare data set, as older archives and some modalities
            // write. PS3.10 says implicit VR little endian; the first element tells.
            Some(Layout::ImplicitLe) => IMPLICIT_VR_LE,
            Some(Layout::ExplicitLe) => EXPLICIT_VR_LE,
            Some(Layout::ExplicitBe) => EXPLICIT_VR_BE,
            None => {
                return Err(Failure::new(
                    "not_dicom",
                    "no DICM marker at byte 128 or 0, and the first bytes are not a DICOM \
                     data element",
                ))
            }
        },
    };
    let ts = registered(ts_uid);

    // Walk the element headers, reading more of the file while the header needs it.
    let mut detours = Vec::new();
    let outcome = loop {
        let complete = src.complete();
        detours.clear();
        match walk(&src.bytes()[ds_start..], ts, complete, &mut detours, false)? {
            Walk::NeedMore(n) => {
                let want = ds_start.saturating_add(n);
                if want > MAX_HEADER_BYTES {
                    return Err(Failure::new(
                        "header_too_large",
                        format!(
                            "the header needs more than {} MiB before PixelData; medlake \
                             reads at most that much",
                            MAX_HEADER_BYTES >> 20
                        ),
                    ));
                }
                src.fill_to(want).map_err(io)?;
            }
            done => break done,
        }
    };
    let (end, warning) = match outcome {
        Walk::End(end) => (end, None),
        Walk::Cut { at, reason } => (at, Some(reason)),
        Walk::NeedMore(_) => unreachable!("handled in the loop"),
    };
    src.header_len = Some(ds_start + end);
    // The common case, a well-formed file: let dicom-object read it with `read_until`,
    // given the header and the PixelData element header after it, so that it stops at
    // PixelData. Reading a bare data set instead ends at the end of the bytes, which
    // dicom-rs reports through an error that captures a backtrace: tens of microseconds
    // per file.
    let mut parsed = None;
    if has_meta && warning.is_none() && detours.is_empty() && declared.as_deref() == Some(ts_uid) {
        let stop = (ds_start + end + 12).min(src.bytes().len());
        let preamble = if meta_start == 132 {
            ReadPreamble::Always
        } else {
            ReadPreamble::Never
        };
        parsed = OpenFileOptions::new()
            .read_preamble(preamble)
            .read_until(tags::PIXEL_DATA)
            .from_reader(&src.bytes()[..stop])
            .ok()
            .map(|f| f.into_inner());
    }
    let header = &src.bytes()[ds_start..ds_start + end];
    let (header, extras) = take_detours(header, &detours);
    if header.is_empty() && extras.is_empty() {
        return Err(Failure::new(
            if warning.is_some() {
                "truncated"
            } else {
                "empty"
            },
            warning.unwrap_or_else(|| "the data set has no elements".into()),
        ));
    }
    build(&header, parsed, &extras, ts, declared, media_uid, warning)
}

/// Deflated explicit VR little endian: inflate the data set, then read it like any other.
fn read_deflated<R: Read>(
    src: &mut Source<R>,
    ds_start: usize,
    ts: &TransferSyntax,
    declared: Option<String>,
    media_uid: Option<String>,
) -> Result<Header, Failure> {
    let io = |e: std::io::Error| Failure::new("io", e.to_string());
    let Codec::Dataset(Some(adapter)) = ts.codec() else {
        return Err(Failure::new(
            "unsupported_transfer_syntax",
            format!("no inflater for transfer syntax {}", ts.uid()),
        ));
    };
    src.fill_to(MAX_HEADER_BYTES).map_err(io)?;
    let compressed = src.bytes()[ds_start..].to_vec();
    let inflater = adapter.adapt_reader(Box::new(Cursor::new(compressed)));
    // The inflated size is unknown: `Source` stops at the end of the stream.
    let mut inflated = Source::new(inflater, MAX_HEADER_BYTES as u64 + 1);
    let explicit = registered(EXPLICIT_VR_LE);
    let deflate_error = |e: std::io::Error| {
        Failure::new(
            "malformed",
            format!("deflated data set after offset {ds_start}: {e}"),
        )
    };
    inflated.fill_to(PREFIX_BYTES).map_err(deflate_error)?;
    let mut detours = Vec::new();
    let outcome = loop {
        let complete = inflated.complete();
        detours.clear();
        match walk(inflated.bytes(), explicit, complete, &mut detours, false)? {
            // Grow step by step: the inflated size is unknown, so a bogus length must not
            // turn into one big buffer before the stream is found to end.
            Walk::NeedMore(n) if n <= MAX_HEADER_BYTES => {
                let step = n.min(inflated.bytes().len().saturating_mul(2).max(PREFIX_BYTES));
                inflated.fill_to(step).map_err(deflate_error)?
            }
            Walk::NeedMore(_) => {
                return Err(Failure::new(
                    "header_too_large",
                    "the inflated header is larger than medlake reads",
                ))
            }
            done => break done,
        }
    };
    let (end, warning) = match outcome {
        Walk::End(end) => (end, None),
        Walk::Cut { at, reason } => (at, Some(reason)),
        Walk::NeedMore(_) => unreachable!("handled in the loop"),
    };
    let (header, extras) = take_detours(&inflated.bytes()[..end], &detours);
    build(
        &header, None, &extras, explicit, declared, media_uid, warning,
    )
}

/// Split the detours out of the header: the header without them, and each one re-encoded
/// as an implicit VR element of undefined length (tag, then 0xFFFFFFFF, then its content),
/// which is how dicom-rs reads a sequence in implicit VR.
fn take_detours<'h>(
    header: &'h [u8],
    detours: &[(usize, usize)],
) -> (std::borrow::Cow<'h, [u8]>, Vec<Vec<u8>>) {
    // Almost every file has none: no copy then.
    if detours.is_empty() {
        return (std::borrow::Cow::Borrowed(header), Vec::new());
    }
    let mut main = Vec::with_capacity(header.len());
    let mut extras = Vec::new();
    let mut last = 0;
    for &(start, end) in detours {
        main.extend_from_slice(&header[last..start]);
        let mut e = header[start..start + 4].to_vec();
        e.extend_from_slice(&[0xFF; 4]);
        // The explicit VR header is 12 bytes: tag, "UN", two reserved bytes, length.
        e.extend_from_slice(&header[start + 12..end]);
        extras.push(e);
        last = end;
    }
    main.extend_from_slice(&header[last..]);
    (std::borrow::Cow::Owned(main), extras)
}

/// One of the three uncompressed transfer syntaxes, which every registry has.
fn registered(uid: &str) -> &'static TransferSyntax {
    TransferSyntaxRegistry
        .get(uid)
        .unwrap_or_else(|| panic!("transfer syntax {uid} is built into dicom-rs"))
}

fn is_deflated(ts: &TransferSyntax) -> bool {
    matches!(ts.codec(), Codec::Dataset(_))
}

fn parse_dataset(bytes: &[u8], ts: &TransferSyntax) -> Result<InMemDicomObject, Failure> {
    InMemDicomObject::read_dataset_with_ts(bytes, ts)
        .map_err(|e| Failure::new("malformed", chain(&e)))
}

/// What the file meta group says.
struct Meta {
    transfer_syntax: Option<String>,
    media_sop_instance_uid: Option<String>,
    /// Bytes from the start of the group to the first data set element.
    len: usize,
}

/// Walk the group 0002 elements. Their group length (0002,0000) is not trusted or needed:
/// some writers leave it out, and the group ends where group 0002 ends.
fn read_meta(bytes: &[u8]) -> Result<Meta, Failure> {
    let explicit = registered(EXPLICIT_VR_LE);
    let implicit = registered(IMPLICIT_VR_LE);
    // PS3.10 says explicit VR little endian; a few old writers used implicit.
    let ts = match sniff(bytes) {
        Some(Layout::ImplicitLe) => implicit,
        _ => explicit,
    };
    let decoder = ts
        .decoder_for::<Cursor<&[u8]>>()
        .expect("little endian transfer syntaxes have decoders");
    let mut cur = Cursor::new(bytes);
    let mut meta = Meta {
        transfer_syntax: None,
        media_sop_instance_uid: None,
        len: 0,
    };
    loop {
        let pos = cur.position() as usize;
        meta.len = pos;
        if bytes.len().saturating_sub(pos) < 8
            || u16::from_le_bytes([bytes[pos], bytes[pos + 1]]) != 2
        {
            break;
        }
        let (header, _) = decoder.decode_header(&mut cur).map_err(|e| {
            Failure::new(
                "malformed",
                format!("file meta group element at offset {pos}: {e}"),
            )
        })?;
        let at = cur.position() as usize;
        let len = header
            .length()
            .get()
            .filter(|&l| at + l as usize <= bytes.len() && at + (l as usize) < MAX_META_BYTES)
            .ok_or_else(|| {
                Failure::new(
                    "malformed",
                    format!(
                        "file meta element {} at offset {pos} declares {} bytes, past the end \
                         of the file meta group",
                        header.tag,
                        length_text(header.length())
                    ),
                )
            })? as usize;
        let value =
            || super::columns::clean(&String::from_utf8_lossy(&bytes[at..at + len])).to_string();
        match header.tag {
            tags::TRANSFER_SYNTAX_UID => meta.transfer_syntax = Some(value()),
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID => meta.media_sop_instance_uid = Some(value()),
            _ => {}
        }
        cur.set_position((at + len) as u64);
    }
    if meta.len == 0 {
        return Err(Failure::new(
            "malformed",
            "DICM marker but no file meta group (group 0002) after it",
        ));
    }
    meta.transfer_syntax = meta.transfer_syntax.filter(|s| !s.is_empty());
    meta.media_sop_instance_uid = meta.media_sop_instance_uid.filter(|s| !s.is_empty());
    Ok(meta)
}

/// How a data set's elements are laid out, as seen from its first element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    ImplicitLe,
    ExplicitLe,
    ExplicitBe,
}

/// Look at the first element. Explicit VR shows as two upper-case letters that name a VR
/// after the tag; the group number shows the byte order. A plausible first group is a
/// small one (0000 command, 0002 meta, 0008 identification).
fn sniff(bytes: &[u8]) -> Option<Layout> {
    if bytes.len() < 8 {
        return None;
    }
    let explicit = VR::from_binary([bytes[4], bytes[5]]).is_some();
    let le_group = u16::from_le_bytes([bytes[0], bytes[1]]);
    let be_group = u16::from_be_bytes([bytes[0], bytes[1]]);
    let plausible = |g: u16| g <= 0x0008;
    if plausible(le_group) {
        if explicit {
            return Some(Layout::ExplicitLe);
        }
        let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        return ((len as usize) <= bytes.len() - 8 || len == u32::MAX)
            .then_some(Layout::ImplicitLe);
    }
    (plausible(be_group) && be_group != 0 && explicit).then_some(Layout::ExplicitBe)
}

/// The outcome of walking a data set's element headers.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// The header ends at this offset (PixelData or the end of the data set).
    End(usize),
    /// The data set is cut short; the elements before `at` are whole.
    Cut { at: usize, reason: String },
    /// The walk needs the data set's first `n` bytes.
    NeedMore(usize),
}

/// Walk element headers from the start of a data set, skipping values, descending into
/// sequences. `complete` says whether `bytes` runs to the end of the file.
///
/// `detours` collects the spans of top-level UN elements of undefined length, whose content
/// is implicit VR (PS3.5 §6.2.2); dicom-rs 0.10 would read it as explicit VR, so they are
/// parsed apart. With `until_delimiter` the walk is inside such content and ends after the
/// sequence delimiter that closes it.
fn walk(
    bytes: &[u8],
    ts: &TransferSyntax,
    complete: bool,
    detours: &mut Vec<(usize, usize)>,
    until_delimiter: bool,
) -> Result<Walk, Failure> {
    let decoder = ts.decoder_for::<Cursor<&[u8]>>().ok_or_else(|| {
        Failure::new(
            "unsupported_transfer_syntax",
            format!("no data set decoder for transfer syntax {}", ts.uid()),
        )
    })?;
    let explicit_le = ts.uid() != IMPLICIT_VR_LE && ts.endianness() == Endianness::Little;
    let mut cur = Cursor::new(bytes);
    // Open sequences and items: where each starts, and where it ends if its length is known.
    let mut open: Vec<(usize, Option<usize>)> = Vec::new();
    // Where to cut if the data set stops inside: before the outermost open element.
    let cut_point =
        |open: &[(usize, Option<usize>)], here: usize| open.first().map_or(here, |o| o.0);
    loop {
        let pos = cur.position() as usize;
        while matches!(open.last(), Some((_, Some(end))) if pos >= *end) {
            open.pop();
        }
        let left = bytes.len() - pos;
        if left == 0 && complete {
            return Ok(if open.is_empty() {
                Walk::End(pos)
            } else {
                Walk::Cut {
                    at: cut_point(&open, pos),
                    reason: format!(
                        "the file ends at offset {pos} inside a sequence that starts at {}",
                        cut_point(&open, pos)
                    ),
                }
            });
        }
        if left < 12 && !complete {
            return Ok(Walk::NeedMore(pos + 12));
        }
        let header: DataElementHeader = match decoder.decode_header(&mut cur) {
            Ok((h, _)) => h,
            Err(e) => {
                return Ok(Walk::Cut {
                    at: cut_point(&open, pos),
                    reason: format!("element header at offset {pos} cannot be read: {e}"),
                })
            }
        };
        let at = cur.position() as usize;
        let tag = header.tag;
        let len = header.length();
        if tag.group() == 0xFFFE {
            if until_delimiter && open.is_empty() && tag.element() == 0xE0DD {
                return Ok(Walk::End(at));
            }
            match tag.element() {
                // An item: its content is more elements.
                0xE000 => open.push((pos, len.get().map(|l| at + l as usize))),
                // Delimiters close the innermost open item or sequence of undefined length.
                _ => {
                    if matches!(open.last(), Some((_, None))) {
                        open.pop();
                    }
                }
            }
            continue;
        }
        if open.is_empty() && !until_delimiter && tag >= tags::PIXEL_DATA {
            return Ok(Walk::End(pos));
        }
        if header.vr == VR::SQ {
            open.push((pos, len.get().map(|l| at + l as usize)));
            continue;
        }
        let Some(l) = len.get() else {
            if header.vr == VR::UN && explicit_le {
                if open.is_empty() && !until_delimiter {
                    let implicit = registered(IMPLICIT_VR_LE);
                    match walk(&bytes[at..], implicit, complete, &mut Vec::new(), true)? {
                        Walk::End(n) => {
                            detours.push((pos, at + n));
                            cur.set_position((at + n) as u64);
                            continue;
                        }
                        Walk::NeedMore(n) => return Ok(Walk::NeedMore(at + n)),
                        Walk::Cut { reason, .. } => {
                            return Ok(Walk::Cut {
                                at: pos,
                                reason: format!("in element {tag} at offset {pos}: {reason}"),
                            })
                        }
                    }
                }
                return Ok(Walk::Cut {
                    at: cut_point(&open, pos),
                    reason: format!(
                        "element {tag} at offset {pos} is a nested UN with undefined length (a \
                         sequence in implicit VR), which medlake cannot read; the header is \
                         kept up to it"
                    ),
                });
            }
            // Encapsulated pixel data inside a sequence (an icon image): skip its fragments.
            match skip_fragments(bytes, &mut cur, &*decoder, complete) {
                Some(Ok(())) => continue,
                Some(Err(reason)) => {
                    return Ok(Walk::Cut {
                        at: cut_point(&open, pos),
                        reason: format!("element {tag} at offset {pos}: {reason}"),
                    })
                }
                None => return Ok(Walk::NeedMore(bytes.len() + PREFIX_BYTES)),
            }
        };
        let end = at as u64 + u64::from(l);
        if end > bytes.len() as u64 {
            if !complete {
                return Ok(Walk::NeedMore(usize::try_from(end).unwrap_or(usize::MAX)));
            }
            return Ok(Walk::Cut {
                at: cut_point(&open, pos),
                reason: format!(
                    "element {tag} at offset {pos} declares {l} bytes, but the file has only \
                     {} bytes after its header",
                    bytes.len() - at
                ),
            });
        }
        cur.set_position(end);
    }
}

/// Skip the fragments of encapsulated pixel data up to its sequence delimiter. `None`
/// means more bytes are needed.
fn skip_fragments<'b>(
    bytes: &'b [u8],
    cur: &mut Cursor<&'b [u8]>,
    decoder: &dyn dicom_encoding::decode::DecodeFrom<Cursor<&'b [u8]>>,
    complete: bool,
) -> Option<Result<(), String>> {
    loop {
        let pos = cur.position() as usize;
        if bytes.len() - pos < 8 {
            return if complete {
                Some(Err("the file ends inside encapsulated pixel data".into()))
            } else {
                None
            };
        }
        let item = match decoder.decode_header(cur) {
            Ok((h, _)) => h,
            Err(e) => return Some(Err(e.to_string())),
        };
        match (item.tag, item.length().get()) {
            (Tag(0xFFFE, 0xE0DD), _) => return Some(Ok(())),
            (Tag(0xFFFE, 0xE000), Some(l)) => {
                let end = cur.position() as usize + l as usize;
                if end > bytes.len() {
                    return if complete {
                        Some(Err(format!("fragment at offset {pos} runs past the end")))
                    } else {
                        None
                    };
                }
                cur.set_position(end as u64);
            }
            (tag, _) => return Some(Err(format!("expected a fragment item, found {tag}"))),
        }
    }
}

fn length_text(l: Length) -> String {
    l.get()
        .map_or_else(|| "an undefined number of".into(), |l| l.to_string())
}

/// The full chain of an error's messages: dicom-rs puts the offset and tag in inner ones.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        src = s.source();
    }
    msg
}

/// Parse the header bytes into an object, decode what dicom-rs leaves undecoded, and find
/// the instance's UID.
#[allow(clippy::too_many_arguments)]
fn build(
    header: &[u8],
    parsed: Option<InMemDicomObject>,
    extras: &[Vec<u8>],
    ts: &TransferSyntax,
    transfer_syntax_uid: Option<String>,
    media_uid: Option<String>,
    warning: Option<String>,
) -> Result<Header, Failure> {
    let mut obj = match parsed {
        Some(obj) => obj,
        None => parse_dataset(header, ts)?,
    };
    let charsets = super::charset::declared(&obj);
    let code_extensions = super::charset::uses_code_extensions(&charsets);
    let mut declared_charset = None;
    if code_extensions {
        // Read again with SpecificCharacterSet blanked, so that every text value comes out
        // as ISO 8859-1, byte for byte, for the ISO 2022 decoder.
        if let Some(raw) = blank_charset(header, ts).and_then(|b| parse_dataset(&b, ts).ok()) {
            declared_charset = obj.get(tags::SPECIFIC_CHARACTER_SET).cloned();
            obj = raw;
        }
    }
    for extra in extras {
        let implicit = registered(IMPLICIT_VR_LE);
        let detour = parse_dataset(extra, implicit)?;
        for elem in detour {
            obj.put(elem);
        }
    }
    if ts.endianness() == Endianness::Little && has_un(&obj) {
        let cs = charset(&obj);
        obj = reread_un(obj, &cs);
    }
    if let Some(scs) = declared_charset {
        obj = super::charset::decode_object(obj, &charsets);
        obj.put(scs);
    }
    let own = obj
        .get(tags::SOP_INSTANCE_UID)
        .and_then(|e| e.to_str().ok())
        .map(|s| super::columns::clean(&s).to_string())
        .filter(|s| !s.is_empty());
    let Some(uid) = own.or(media_uid.filter(|s| !s.is_empty())) else {
        return Err(Failure::new(
            "missing_uid",
            "no SOPInstanceUID (0008,0018) in the data set or MediaStorageSOPInstanceUID \
             (0002,0003) in the file meta group",
        ));
    };
    Ok(Header {
        obj,
        transfer_syntax_uid,
        sop_instance_uid: uid,
        warning,
    })
}

/// A copy of the header with the value of the top-level SpecificCharacterSet replaced by
/// spaces. It is among the first elements, so only those before it are walked.
fn blank_charset(header: &[u8], ts: &TransferSyntax) -> Option<Vec<u8>> {
    let decoder = ts.decoder_for::<Cursor<&[u8]>>()?;
    let mut cur = Cursor::new(header);
    loop {
        let (h, _) = decoder.decode_header(&mut cur).ok()?;
        let at = cur.position() as usize;
        let len = h.length().get()? as usize;
        if at + len > header.len() || h.tag > tags::SPECIFIC_CHARACTER_SET {
            return None;
        }
        if h.tag == tags::SPECIFIC_CHARACTER_SET {
            let mut copy = header.to_vec();
            copy[at..at + len].fill(b' ');
            return Some(copy);
        }
        cur.set_position((at + len) as u64);
    }
}

/// Whether any element (at any depth) was read as UN but has a known VR.
fn has_un(obj: &InMemDicomObject) -> bool {
    obj.iter().any(|e| match e.value() {
        Value::Sequence(s) => s.items().iter().any(has_un),
        _ => e.vr() == VR::UN && known_vr(e.tag()).is_some(),
    })
}

fn known_vr(tag: Tag) -> Option<VR> {
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.vr().relaxed())
        .filter(|vr| !matches!(vr, VR::UN | VR::SQ))
}

fn charset(obj: &InMemDicomObject) -> SpecificCharacterSet {
    let code = obj
        .get(tags::SPECIFIC_CHARACTER_SET)
        .and_then(|e| match e.vr() {
            VR::UN => e
                .value()
                .to_bytes()
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            _ => e.to_str().ok().map(|s| s.into_owned()),
        });
    code.and_then(|c| {
        let first = c
            .split('\\')
            .map(str::trim)
            .find(|s| !s.is_empty())?
            .to_string();
        SpecificCharacterSet::from_code(&first)
    })
    .unwrap_or_default()
}

/// Re-read UN values with the dictionary VR, by handing dicom-rs the element again as
/// implicit VR little endian (where the dictionary decides the VR).
fn reread_un(mut obj: InMemDicomObject, cs: &SpecificCharacterSet) -> InMemDicomObject {
    let implicit = registered(IMPLICIT_VR_LE);
    let tags_here: Vec<Tag> = obj.iter().map(|e| e.tag()).collect();
    for tag in tags_here {
        let Ok(elem) = obj.take_element(tag) else {
            continue;
        };
        let vr = elem.vr();
        let replaced = match elem.into_value() {
            Value::Sequence(seq) => {
                let length = seq.length();
                let items: Vec<InMemDicomObject> = seq
                    .into_items()
                    .into_iter()
                    .map(|item| {
                        if has_un(&item) {
                            reread_un(item, cs)
                        } else {
                            item
                        }
                    })
                    .collect();
                DataElement::new(
                    tag,
                    vr,
                    Value::Sequence(DataSetSequence::new(items, length)),
                )
            }
            Value::Primitive(p) if vr == VR::UN && known_vr(tag).is_some() => {
                reread_one(tag, &p, implicit, cs)
                    .unwrap_or_else(|| DataElement::new(tag, vr, Value::Primitive(p)))
            }
            other => DataElement::new(tag, vr, other),
        };
        obj.put(replaced);
    }
    obj
}

fn reread_one(
    tag: Tag,
    value: &PrimitiveValue,
    implicit: &TransferSyntax,
    cs: &SpecificCharacterSet,
) -> Option<dicom_object::mem::InMemElement> {
    let raw = value.to_bytes();
    let mut buf = Vec::with_capacity(raw.len() + 8);
    buf.extend_from_slice(&tag.group().to_le_bytes());
    buf.extend_from_slice(&tag.element().to_le_bytes());
    buf.extend_from_slice(&u32::try_from(raw.len()).ok()?.to_le_bytes());
    buf.extend_from_slice(&raw);
    let mut one = InMemDicomObject::read_dataset_with_ts_cs(&buf[..], implicit, cs.clone()).ok()?;
    one.take_element(tag).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit_le() -> &'static TransferSyntax {
        TransferSyntaxRegistry.get(EXPLICIT_VR_LE).unwrap()
    }

    /// An explicit VR LE element with a 2-byte length.
    fn short(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&group.to_le_bytes());
        v.extend_from_slice(&elem.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    /// An explicit VR LE element with a 4-byte length (OB, UN, SQ...).
    fn long(group: u16, elem: u16, vr: &[u8; 2], len: u32, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&group.to_le_bytes());
        v.extend_from_slice(&elem.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn walk_stops_at_pixel_data() {
        let mut ds = short(0x0008, 0x0060, b"CS", b"CT");
        let pixel_at = ds.len();
        ds.extend(long(0x7FE0, 0x0010, b"OW", 4, &[1, 2, 3, 4]));
        assert_eq!(
            walk(&ds, explicit_le(), true, &mut Vec::new(), false).unwrap(),
            Walk::End(pixel_at)
        );
    }

    #[test]
    fn bogus_length_is_cut_not_allocated() {
        let mut ds = short(0x0008, 0x0060, b"CS", b"CT");
        let bad_at = ds.len();
        ds.extend(long(0x0009, 0x1010, b"OB", 0xFFFF_FFF0, b"abcd"));
        match walk(&ds, explicit_le(), true, &mut Vec::new(), false).unwrap() {
            Walk::Cut { at, reason } => {
                assert_eq!(at, bad_at);
                assert!(reason.contains("(0009,1010)"), "{reason}");
                assert!(reason.contains("4294967280"), "{reason}");
            }
            other => panic!("expected a cut, got {other:?}"),
        }
        // Before the end of the file is known, the same bytes ask for more, not a cut.
        assert_eq!(
            walk(&ds, explicit_le(), false, &mut Vec::new(), false).unwrap(),
            Walk::NeedMore(bad_at + 12 + 0xFFFF_FFF0)
        );
    }

    #[test]
    fn truncation_inside_a_sequence_cuts_before_the_sequence() {
        let mut ds = short(0x0008, 0x0060, b"CS", b"CT");
        let seq_at = ds.len();
        ds.extend(long(0x0008, 0x1115, b"SQ", u32::MAX, &[]));
        ds.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        ds.extend(short(0x0008, 0x1150, b"UI", b"1.2.3\0"));
        match walk(&ds, explicit_le(), true, &mut Vec::new(), false).unwrap() {
            Walk::Cut { at, .. } => assert_eq!(at, seq_at),
            other => panic!("expected a cut, got {other:?}"),
        }
    }

    #[test]
    fn sniff_tells_layouts_apart() {
        let explicit = short(0x0008, 0x0005, b"CS", b"ISO_IR 100");
        assert_eq!(sniff(&explicit), Some(Layout::ExplicitLe));
        let mut implicit = vec![0x08, 0x00, 0x05, 0x00, 10, 0, 0, 0];
        implicit.extend_from_slice(b"ISO_IR 100");
        assert_eq!(sniff(&implicit), Some(Layout::ImplicitLe));
        let mut be = vec![0x00, 0x08, 0x00, 0x05, b'C', b'S', 0, 10];
        be.extend_from_slice(b"ISO_IR 100");
        assert_eq!(sniff(&be), Some(Layout::ExplicitBe));
        assert_eq!(sniff(b"%PDF-1.4 not dicom at all"), None);
    }
}
