//! The "image model step": one report per image, written as a JSON line next to the batch.
//!
//! The classic pipeline this connector replaces ran a small analysis over every image of a batch and
//! emitted one JSON line per image. Here that step is deliberately cheap and total:
//!
//! - **What it reads.** The format comes from the magic-number sniff ([`ImageFormat::sniff`]); when
//!   the sniff does not know the bytes but `imagesize` does (ICO, PSD, QOI, …) the report names
//!   `imagesize`'s type instead of `"unknown"`. Width and height come from `imagesize::blob_size`,
//!   which parses only the header; the body of the image is never decoded. `bytes` and `crc32`
//!   identify the exact content, so a report can be checked against the published file.
//! - **Validity.** `valid` means "the header was readable and gave dimensions". Garbage, an empty
//!   block or a header cut short gives `valid = false` and a human-readable `error`; it is never a
//!   failure of the batch: acknowledged bytes are always written, the report only describes them.
//! - **Never panics.** `imagesize` returns errors for short input, and the call is additionally
//!   wrapped in `catch_unwind`, so a parser bug on hostile bytes becomes `valid = false` with the
//!   panic message as the error instead of taking the node down.
//! - **Observability.** Every report is also emitted as a `tracing` event at info level on the
//!   target `hdfs_ingest::analysis`, with the report's fields as event fields, so a log pipeline can
//!   consume the analysis without reading the output directory.

use serde::{Deserialize, Serialize};

use super::format::ImageFormat;

/// The analysis of one image, serialised as one line of `_analysis.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageReport {
    /// The file name inside the batch directory (`<source>-<seq>.<ext>`).
    pub file: String,
    pub source: String,
    pub seq: u64,
    /// `jpeg`, `png`, `bmp`, `gif`, `webp`, `tiff`, another `imagesize` type in lowercase, or
    /// `unknown`.
    pub format: String,
    pub width: Option<u64>,
    pub height: Option<u64>,
    /// Length of the image in bytes.
    pub bytes: u64,
    /// CRC32 (IEEE) of the image bytes.
    pub crc32: u32,
    /// The header was readable and gave dimensions.
    pub valid: bool,
    /// Why the image is not valid; `None` when it is.
    pub error: Option<String>,
}

impl ImageReport {
    /// The report as one JSON line, newline included.
    pub fn to_json_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }
}

/// Analyses one image. Never panics and never fails: unreadable input gives `valid = false`.
pub fn analyze(file: &str, source: &str, seq: u64, bytes: &[u8]) -> ImageReport {
    let report = inspect(file, source, seq, bytes);
    tracing::info!(
        target: "hdfs_ingest::analysis",
        file = %report.file,
        source = %report.source,
        seq = report.seq,
        format = %report.format,
        width = report.width,
        height = report.height,
        bytes = report.bytes,
        crc32 = report.crc32,
        valid = report.valid,
        error = report.error.as_deref(),
        "image analysed"
    );
    report
}

/// [`analyze`] without its log line: what the packed layouts record of every image (format, size,
/// CRC-32) whether analysis is on or not.
pub fn inspect(file: &str, source: &str, seq: u64, bytes: &[u8]) -> ImageReport {
    let sniffed = ImageFormat::sniff(bytes);
    let format = match sniffed {
        ImageFormat::Unknown => match imagesize::image_type(bytes) {
            Ok(other) => format!("{other:?}").to_lowercase(),
            Err(_) => sniffed.name().to_owned(),
        },
        known => known.name().to_owned(),
    };

    let size = std::panic::catch_unwind(|| imagesize::blob_size(bytes));
    let (width, height, error) = match size {
        Ok(Ok(size)) => (Some(size.width as u64), Some(size.height as u64), None),
        Ok(Err(err)) => (None, None, Some(describe_error(&err, bytes.len()))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            (
                None,
                None,
                Some(format!("image header parser panicked: {message}")),
            )
        }
    };

    ImageReport {
        file: file.to_owned(),
        source: source.to_owned(),
        seq,
        format,
        width,
        height,
        bytes: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
        valid: error.is_none(),
        error,
    }
}

fn describe_error(err: &imagesize::ImageError, len: usize) -> String {
    match err {
        imagesize::ImageError::NotSupported => "not a recognised image format".to_owned(),
        imagesize::ImageError::CorruptedImage => "corrupted image header".to_owned(),
        imagesize::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("image header truncated ({len} bytes)")
        }
        imagesize::ImageError::IoError(io) => format!("unreadable image header: {io}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_images as img;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_images_report_their_dimensions_format_and_checksum() {
        let cases = [
            (img::png_1x1(), "png"),
            (img::bmp_1x1(), "bmp"),
            (img::gif_1x1(), "gif"),
            (img::jpeg_1x1(), "jpeg"),
            (img::tiff_1x1(), "tiff"),
            (img::webp_header_1x1(), "webp"),
        ];
        for (bytes, format) in cases {
            let report = analyze("cam-1.x", "cam", 1, &bytes);
            assert!(report.valid, "{format}: {report:?}");
            assert_eq!(report.error, None);
            assert_eq!(report.format, format);
            assert_eq!(
                (report.width, report.height),
                (Some(1), Some(1)),
                "{format}"
            );
            assert_eq!(report.bytes, bytes.len() as u64);
            assert_eq!(report.crc32, crc32fast::hash(&bytes));
            assert_eq!(
                (report.file.as_str(), report.source.as_str(), report.seq),
                ("cam-1.x", "cam", 1)
            );
        }
    }

    #[test]
    fn garbage_is_reported_invalid_with_an_error() {
        for bytes in [&b""[..], b"not an image at all, just text", &[0u8; 64]] {
            let report = analyze("s-0.bin", "s", 0, bytes);
            assert!(!report.valid, "{bytes:?}");
            assert_eq!(report.format, "unknown");
            assert_eq!((report.width, report.height), (None, None));
            let error = report.error.expect("an invalid image names its error");
            assert!(!error.is_empty());
        }
    }

    #[test]
    fn a_truncated_jpeg_is_invalid_but_does_not_panic() {
        let jpeg = img::jpeg_1x1();
        // Cut before the SOF0 marker's dimensions: the header cannot give a size.
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        for cut in [3, 10, sof, sof + 5] {
            let report = analyze("s-0.jpg", "s", 0, &jpeg[..cut]);
            assert_eq!(report.format, "jpeg", "cut at {cut}");
            assert!(!report.valid, "cut at {cut}: {report:?}");
            assert!(report.error.is_some());
        }
    }

    #[test]
    fn a_report_round_trips_as_one_json_line() {
        let report = analyze("cam-7.png", "cam", 7, &img::png_1x1());
        let line = report.to_json_line().unwrap();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let back: ImageReport = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, report);
    }

    proptest! {
        #[test]
        fn analyze_is_total_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let report = analyze("f", "s", 0, &bytes);
            prop_assert_eq!(report.bytes, bytes.len() as u64);
            prop_assert_eq!(report.valid, report.error.is_none());
            prop_assert_eq!(report.valid, report.width.is_some());
        }

        #[test]
        fn every_prefix_of_a_real_image_is_analysed_without_panicking(
            which in 0usize..5,
            cut in 0usize..200,
        ) {
            let full = [img::png_1x1(), img::bmp_1x1(), img::gif_1x1(), img::jpeg_1x1(), img::tiff_1x1()][which].clone();
            let cut = cut.min(full.len());
            let report = analyze("f", "s", 0, &full[..cut]);
            prop_assert_eq!(report.bytes, cut as u64);
            if cut == full.len() {
                prop_assert!(report.valid);
            }
        }
    }
}
