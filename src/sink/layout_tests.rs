//! The packed and partitioned layouts through the sink, on a local output: what lands where, that
//! part files roll and read back byte for byte, and that a failure in the middle of a part file
//! publishes nothing and loses nothing at the retry.

use std::convert::Infallible;

use bytes::Bytes;
use futures::stream;

use super::test_images as img;
use super::*;
use crate::layout::read::{decode_part, local_batch_dirs, local_batch_files};

fn blocks(n: u64, size: usize) -> Vec<BatchBlock> {
    (0..n)
        .map(|seq| {
            let mut bytes = img::jpeg_1x1();
            bytes.extend((0..size).map(|i| (i as u64 * 31 + seq) as u8));
            BatchBlock {
                source: format!("cam-{}", seq % 3),
                seq,
                bytes: Bytes::from(bytes),
            }
        })
        .collect()
}

fn stream_of(b: Vec<BatchBlock>) -> impl Stream<Item = Result<BatchBlock, Infallible>> + Send {
    stream::iter(b.into_iter().map(Ok))
}

fn layout(format: Format) -> Layout {
    Layout {
        path: PathTemplate::parse(PathTemplate::DEFAULT).unwrap(),
        ..Layout::flat("images").with_format(format)
    }
}

/// Every image of a local batch directory, from its files or its part files, in file order.
fn images_in(root: &std::path::Path, batch: &str) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for path in local_batch_files(&root.join(batch)).unwrap() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = Bytes::from(std::fs::read(&path).unwrap());
        match Format::of_part_name(&name) {
            Some(f) => out.extend(decode_part(f, data).unwrap()),
            None => out.push((name, data)),
        }
    }
    out
}

async fn write(output: &LocalOutput, layout: &Layout, ms: u64, b: Vec<BatchBlock>) -> BatchSummary {
    write_batch_claimed(output, layout, ms, 0, true, stream_of(b), || async {
        Ok(())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn every_format_lands_every_image_byte_for_byte_under_a_hive_style_partition() {
    for format in Format::ALL {
        let dir = tempfile::tempdir().unwrap();
        let output = LocalOutput::new(dir.path()).unwrap();
        let sent = blocks(20, 3000);
        // 2026-12-02T18:36:51Z
        let summary = write(&output, &layout(format), 1_796_236_611_000, sent.clone()).await;
        assert_eq!(summary.outcome, Some(PublishOutcome::Published));
        assert_eq!(summary.files, 20, "{format:?}");
        let batch = "dt=2026-12-02/hour=18/images-1796236611000";
        assert_eq!(
            local_batch_dirs(dir.path()).unwrap(),
            vec![batch.to_string()]
        );
        assert!(
            dir.path().join(batch).join(ANALYSIS_FILE).is_file(),
            "{format:?}"
        );
        let got = images_in(dir.path(), batch);
        let mut want: Vec<(String, Bytes)> = sent
            .iter()
            .map(|b| (image_file_name(&b.source, b.seq, "jpg"), b.bytes.clone()))
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want, "{format:?}");
        if format != Format::Files {
            assert_eq!(summary.parts, 1, "{format:?}");
            // Packed parts keep the blocks' order.
            let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names[0], "cam-0-0.jpg");
            assert_eq!(names[19], "cam-1-19.jpg");
        }
        assert!(!dir.path().join(STAGING_DIR).exists());
    }
}

#[tokio::test]
async fn part_files_roll_at_the_size_and_the_image_count_limits() {
    for format in [Format::SequenceFile, Format::Parquet] {
        let dir = tempfile::tempdir().unwrap();
        let output = LocalOutput::new(dir.path()).unwrap();
        let by_count = Layout {
            max_images_per_file: 7,
            ..layout(format)
        };
        let s = write(&output, &by_count, 1_000, blocks(20, 100)).await;
        assert_eq!(s.parts, 3, "{format:?}: 20 images at 7 per part");
        let by_size = Layout {
            max_file_size: 64 << 10,
            ..layout(format)
        };
        let s = write(&output, &by_size, 2_000, blocks(20, 10_000)).await;
        // 20 images of ~10 KB, parts under 64 KiB: 6 per part at most.
        assert!(s.parts >= 4, "{format:?}: {} parts", s.parts);
        for batch in local_batch_dirs(dir.path()).unwrap() {
            for part in local_batch_files(&dir.path().join(&batch)).unwrap() {
                let name = part.file_name().unwrap().to_string_lossy().into_owned();
                assert_eq!(Format::of_part_name(&name), Some(format), "{name}");
                if batch.ends_with("-2000") {
                    let len = std::fs::metadata(&part).unwrap().len();
                    // One image may exceed the limit's estimate by its framing, never by another image.
                    assert!(len <= (64 << 10) + 10_000, "{name}: {len} bytes");
                }
            }
            assert_eq!(images_in(dir.path(), &batch).len(), 20, "{batch}");
        }
    }
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_write_that_fails_in_the_middle_of_a_part_file_publishes_nothing_and_the_retry_lands_every_image_once(
) {
    let _scenario = fail::FailScenario::setup();
    for format in [Format::SequenceFile, Format::Parquet] {
        let dir = tempfile::tempdir().unwrap();
        let output = LocalOutput::new(dir.path()).unwrap();
        let l = Layout {
            max_images_per_file: 4,
            ..layout(format)
        };
        // The third part file's first write fails: two parts are complete, the third is created.
        let part = format!("{}/{}", l.batch_dir(5_000), l.part_name(2).unwrap());
        fail::cfg("sink::part::fault", &format!("return({part})")).unwrap();
        let err = write_batch_claimed(
            &output,
            &l,
            5_000,
            0,
            false,
            stream_of(blocks(12, 500)),
            || async { Ok(()) },
        )
        .await;
        fail::remove("sink::part::fault");
        let staged = crate::layout::read::local_batch_files(
            &std::fs::read_dir(dir.path().join(STAGING_DIR).join("default").join("e0"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap();
        assert_eq!(
            staged.len(),
            3,
            "{format:?}: two whole parts and the one begun are staged: {staged:?}"
        );
        assert!(
            err.is_err(),
            "{format:?}: the injected fault must fail the batch"
        );
        assert!(
            local_batch_dirs(dir.path()).unwrap().is_empty(),
            "{format:?}: nothing visible"
        );
        let s = write(&output, &l, 5_000, blocks(12, 500)).await;
        assert_eq!(s.outcome, Some(PublishOutcome::Published));
        let batches = local_batch_dirs(dir.path()).unwrap();
        assert_eq!(batches.len(), 1);
        let mut names: Vec<String> = images_in(dir.path(), &batches[0])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 12, "{format:?}");
        assert!(
            !dir.path().join(STAGING_DIR).exists(),
            "{format:?}: staging left behind"
        );
    }
}

/// A SequenceFile has no checksum of its own: a flipped bit in an image's bytes reads back as a
/// well-formed record. The key's CRC-32 is what catches it.
#[tokio::test]
async fn a_flipped_byte_in_a_sequencefile_image_is_caught_by_its_keys_crc_naming_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    let sent = blocks(3, 500);
    let summary = write(
        &output,
        &layout(Format::SequenceFile),
        1_796_236_611_000,
        sent.clone(),
    )
    .await;
    assert_eq!(summary.outcome, Some(PublishOutcome::Published));
    let part = dir
        .path()
        .join("dt=2026-12-02/hour=18/images-1796236611000/part-00000.seq");
    let mut data = std::fs::read(&part).unwrap();
    assert_eq!(
        decode_part(Format::SequenceFile, Bytes::from(data.clone()))
            .unwrap()
            .len(),
        3
    );
    // Flip the last byte of the last image, inside its record.
    let last = &sent[2].bytes;
    let at = data
        .windows(last.len())
        .rposition(|w| w == &last[..])
        .expect("the image's bytes are in the part");
    data[at + last.len() - 1] ^= 0x01;
    let err = decode_part(Format::SequenceFile, Bytes::from(data)).unwrap_err();
    assert!(
        err.contains("cam-2-2.jpg") && err.contains("CRC-32"),
        "the error names the image and the check: {err}"
    );
}
