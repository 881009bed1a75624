//! Image format sniffing, used only to pick a file extension.
//!
//! The sink names every output file `<source>-<seq>.<ext>`; the extension is the one thing it needs
//! to know about the bytes, and it must be a pure function of them so that a re-run of a batch after a
//! crash produces exactly the same names. The sniff therefore looks at magic numbers only: it is cheap,
//! never fails, and never reads past the first dozen bytes. Whether the image is actually decodable
//! (its dimensions, a truncated body) is the business of [`super::analysis`], which uses the
//! `imagesize` crate; a file whose header looks like a PNG but whose body is garbage still gets `.png`,
//! and the analysis line says it is invalid.
//!
//! Recognised: JPEG (`FF D8 FF`), PNG (the 8-byte signature), BMP (`BM`), GIF (`GIF87a`/`GIF89a`),
//! WebP (`RIFF....WEBP`), TIFF (`II*\0`, `MM\0*` and their BigTIFF forms). Anything else is
//! [`ImageFormat::Unknown`] and lands as `.bin`: the sink never refuses bytes it has acknowledged.

use serde::Serialize;

/// The format of an image as far as its file extension is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Png,
    Bmp,
    Gif,
    Webp,
    Tiff,
    Unknown,
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

impl ImageFormat {
    /// Every variant, in declaration order (handy for exhaustive tests and docs).
    pub const ALL: [ImageFormat; 7] = [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Bmp,
        ImageFormat::Gif,
        ImageFormat::Webp,
        ImageFormat::Tiff,
        ImageFormat::Unknown,
    ];

    /// Recognises the format from the leading magic number; [`ImageFormat::Unknown`] otherwise.
    pub fn sniff(bytes: &[u8]) -> ImageFormat {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            ImageFormat::Jpeg
        } else if bytes.starts_with(PNG_SIGNATURE) {
            ImageFormat::Png
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            ImageFormat::Gif
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            ImageFormat::Webp
        } else if bytes.starts_with(b"II*\0")
            || bytes.starts_with(b"MM\0*")
            || bytes.starts_with(b"II+\0")
            || bytes.starts_with(b"MM\0+")
        {
            ImageFormat::Tiff
        } else if bytes.starts_with(b"BM") {
            ImageFormat::Bmp
        } else {
            ImageFormat::Unknown
        }
    }

    /// The file extension used for this format (without the dot).
    pub fn ext(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Gif => "gif",
            ImageFormat::Webp => "webp",
            ImageFormat::Tiff => "tiff",
            ImageFormat::Unknown => "bin",
        }
    }

    /// The lowercase name used in analysis reports (`"jpeg"`, …, `"unknown"`), the same string serde
    /// produces.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Gif => "gif",
            ImageFormat::Webp => "webp",
            ImageFormat::Tiff => "tiff",
            ImageFormat::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_images as img;
    use super::*;

    #[test]
    fn each_real_image_is_recognised_and_gets_its_extension() {
        let cases = [
            (img::png_1x1(), ImageFormat::Png, "png"),
            (img::bmp_1x1(), ImageFormat::Bmp, "bmp"),
            (img::gif_1x1(), ImageFormat::Gif, "gif"),
            (img::jpeg_1x1(), ImageFormat::Jpeg, "jpg"),
            (img::webp_header_1x1(), ImageFormat::Webp, "webp"),
            (img::tiff_1x1(), ImageFormat::Tiff, "tiff"),
        ];
        for (bytes, format, ext) in cases {
            assert_eq!(ImageFormat::sniff(&bytes), format, "sniffing {ext}");
            assert_eq!(format.ext(), ext);
            // The headers are real: imagesize reads the same type and a 1x1 size from them.
            let size = imagesize::blob_size(&bytes)
                .unwrap_or_else(|e| panic!("imagesize could not read the {ext} image: {e}"));
            assert_eq!((size.width, size.height), (1, 1), "dimensions of {ext}");
        }
    }

    #[test]
    fn anything_else_is_unknown_and_lands_as_bin() {
        for bytes in [
            &b""[..],
            b"\xFF\xD8",
            b"hello world",
            b"RIFF\0\0\0\0WAVEfmt ",
            b"\x89PNG",
        ] {
            assert_eq!(ImageFormat::sniff(bytes), ImageFormat::Unknown, "{bytes:?}");
        }
        assert_eq!(ImageFormat::Unknown.ext(), "bin");
    }

    #[test]
    fn the_report_name_matches_the_serde_name() {
        for format in ImageFormat::ALL {
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{}\"", format.name()));
        }
    }
}
