//! One image file to planar f32 pixels in [0, 1] with the model's channels:
//! JPEG (grey, RGB, CMYK), PNG (grey, grey+alpha, RGB, RGBA, 8 or 16 bits) and
//! BMP, decoded by the `image` crate. Colour goes to grey with PIL's ITU-R 601-2
//! luma (`L = R 299/1000 + G 587/1000 + B 114/1000`), grey to colour by
//! repetition, and alpha is dropped, as PIL's `convert` does.

use image::{DynamicImage, ImageFormat};
use std::path::Path;

/// The extensions read from image folders (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

/// Whether `path` names an image by its extension.
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// A decoded image: planar `channels x height x width` values in [0, 1].
pub struct Planar {
    pub values: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

/// Why a file is not an image this reader can use (the caller names the file).
pub fn decode(path: &Path, channels: usize) -> std::result::Result<Planar, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let format = image::guess_format(&bytes)
        .map_err(|_| "not a JPEG, PNG or BMP file (unrecognised signature)".to_string())?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp
    ) {
        return Err(format!(
            "a {format:?} image; only JPEG, PNG and BMP are read"
        ));
    }
    let mut reader = image::io::Reader::with_format(std::io::Cursor::new(&bytes), format);
    reader.limits(limits());
    let image = reader
        .decode()
        .map_err(|e| format!("corrupt {format:?} data ({e})"))?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    if width == 0 || height == 0 {
        return Err("an empty (0-pixel) image".into());
    }
    let values = match channels {
        1 => grey_plane(&image),
        3 => rgb_planes(&image),
        other => {
            return Err(format!(
                "the model reads {other} channels; images become 1 (grey) or 3 (RGB)"
            ))
        }
    };
    Ok(Planar {
        values,
        height,
        width,
    })
}

/// Most bytes a decoder may allocate for one image (the `image` crate checks
/// a header's claimed size against it before allocating): 256 MiB, an 8-bit
/// RGBA image of 8192 x 8192.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

fn limits() -> image::io::Limits {
    let mut limits = image::io::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    limits
}

/// The header only: `(width, height)`, or why the file is not a readable image.
pub fn dimensions(path: &Path) -> std::result::Result<(u32, u32), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut reader = image::io::Reader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp)) => f,
        Some(other) => {
            return Err(format!(
                "a {other:?} image; only JPEG, PNG and BMP are read"
            ))
        }
        None => return Err("not a JPEG, PNG or BMP file (unrecognised signature)".into()),
    };
    reader.limits(limits());
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| format!("corrupt {format:?} header ({e})"))?;
    if width == 0 || height == 0 {
        return Err("an empty (0-pixel) image".into());
    }
    Ok((width, height))
}

fn scale(v: u8) -> f32 {
    f32::from(v) / 255.0
}

fn grey_plane(image: &DynamicImage) -> Vec<f32> {
    match image {
        DynamicImage::ImageLuma8(grey) => grey.as_raw().iter().map(|&v| scale(v)).collect(),
        DynamicImage::ImageLumaA8(grey) => {
            grey.as_raw().iter().step_by(2).map(|&v| scale(v)).collect()
        }
        other => other
            .to_rgb8()
            .as_raw()
            .chunks_exact(3)
            .map(|p| {
                let luma =
                    (u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114 + 500)
                        / 1000;
                scale(luma as u8)
            })
            .collect(),
    }
}

fn rgb_planes(image: &DynamicImage) -> Vec<f32> {
    let plane = image.width() as usize * image.height() as usize;
    let mut out = vec![0.0f32; 3 * plane];
    let interleaved;
    let (pixels, stride): (&[u8], usize) = match image {
        DynamicImage::ImageLuma8(grey) => (grey.as_raw(), 1),
        DynamicImage::ImageLumaA8(grey) => (grey.as_raw(), 2),
        DynamicImage::ImageRgb8(rgb) => (rgb.as_raw(), 3),
        DynamicImage::ImageRgba8(rgba) => (rgba.as_raw(), 4),
        other => {
            interleaved = other.to_rgb8().into_raw();
            (&interleaved, 3)
        }
    };
    let (r, gb) = out.split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    for (i, p) in pixels.chunks_exact(stride).enumerate() {
        if stride < 3 {
            let v = scale(p[0]);
            (r[i], g[i], b[i]) = (v, v, v);
        } else {
            (r[i], g[i], b[i]) = (scale(p[0]), scale(p[1]), scale(p[2]));
        }
    }
    out
}
