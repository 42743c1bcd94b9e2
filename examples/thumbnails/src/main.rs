//! One child of the thumbnail array job. Every child lists the same input directory in name
//! order and takes the image at its own index (AWS_BATCH_JOB_ARRAY_INDEX), so an array of N
//! children covers N images with no coordination between them.
//!
//!   thumbnail [--input DIR] [--output DIR] [--size PX]   (defaults /input, /output, 128)
//!   thumbnail --make-samples DIR N                        (N sample PNGs to try it with)

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DEFAULT_SIZE: u32 = 128;
const SAMPLE_SIDE: u32 = 640;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--make-samples") => make_samples(&args[1..]),
        _ => thumbnail(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("thumbnail: {e}");
            ExitCode::FAILURE
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn thumbnail(args: &[String]) -> Result<(), String> {
    let input = PathBuf::from(flag(args, "--input").unwrap_or_else(|| "/input".into()));
    let output = PathBuf::from(flag(args, "--output").unwrap_or_else(|| "/output".into()));
    let size: u32 = match flag(args, "--size") {
        Some(s) => s.parse().map_err(|_| format!("--size {s:?} is not a number of pixels"))?,
        None => DEFAULT_SIZE,
    };
    // A plain job (no array) is child 0: handy to try one image.
    let index: usize = match std::env::var("AWS_BATCH_JOB_ARRAY_INDEX") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("AWS_BATCH_JOB_ARRAY_INDEX {v:?} is not an index"))?,
        Err(_) => 0,
    };
    let images = list_images(&input)?;
    let Some(source) = images.get(index) else {
        return Err(format!(
            "child {index} has no image: {} holds {} images; submit the array with size {}",
            input.display(),
            images.len(),
            images.len()
        ));
    };
    let img = image::open(source).map_err(|e| format!("reading {}: {e}", source.display()))?;
    let thumb = img.thumbnail(size, size);
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("image-{index}"));
    let target = output.join(format!("{stem}.thumb.png"));
    thumb
        .save(&target)
        .map_err(|e| format!("writing {}: {e}", target.display()))?;
    println!(
        "child {index}: {} ({}x{}) -> {} ({}x{})",
        source.display(),
        img.width(),
        img.height(),
        target.display(),
        thumb.width(),
        thumb.height()
    );
    Ok(())
}

/// The images of `dir` (png, jpg, jpeg), in name order: the order every child agrees on.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let mut images: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    images.sort();
    Ok(images)
}

fn make_samples(args: &[String]) -> Result<(), String> {
    let (Some(dir), Some(n)) = (args.first(), args.get(1)) else {
        return Err("usage: thumbnail --make-samples DIR N".into());
    };
    let n: u32 = n.parse().map_err(|_| format!("N {n:?} is not a number"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
    for i in 0..n {
        // A gradient whose colours differ per image, so the thumbnails can be told apart.
        let img = image::RgbImage::from_fn(SAMPLE_SIDE, SAMPLE_SIDE * 3 / 4, |x, y| {
            image::Rgb([
                (x * 255 / SAMPLE_SIDE) as u8,
                (y * 255 / SAMPLE_SIDE) as u8,
                ((i * 47) % 256) as u8,
            ])
        });
        let path = Path::new(dir).join(format!("sample-{i:03}.png"));
        img.save(&path)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    println!("{n} sample images in {dir}");
    Ok(())
}
