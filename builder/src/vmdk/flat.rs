//! monolithicFlat writer: a descriptor `X.vmdk` naming the raw extent `X-flat.vmdk` (same
//! directory, relative name), which is the disk itself, written sparse: holes and all-zero
//! grains stay holes.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use crate::image_io::ReadAt;

use super::descriptor::{self, Access, ExtentLine};
use super::source::for_each_data_run;
use super::{VmdkError, VmdkOptions, GRAIN_BYTES, SECTOR};

/// The extent's file name for descriptor `name`: `X.vmdk` → `X-flat.vmdk`.
pub fn extent_name(name: &str) -> String {
    let stem = name.strip_suffix(".vmdk").unwrap_or(name);
    format!("{stem}-flat.vmdk")
}

/// Writes the extent of the `size`-byte image `src` (data only in `ranges`) into `flat`, and
/// the descriptor naming it `flat_name` into `desc`.
pub fn write(
    src: &dyn ReadAt,
    size: u64,
    ranges: &[(u64, u64)],
    flat: &File,
    mut desc: &File,
    flat_name: &str,
    opts: &VmdkOptions,
) -> Result<(), VmdkError> {
    let capacity = size.div_ceil(SECTOR);
    let bytes = capacity * SECTOR;
    let io = |what, path: &str| {
        let path = path.into();
        move |source| VmdkError::Io { what, path, source }
    };
    flat.set_len(bytes)
        .map_err(io("set the length of", flat_name))?;
    for_each_data_run(src, size, ranges, GRAIN_BYTES, |first, data| {
        let off = first * GRAIN_BYTES;
        // The last grain is padded past the disk: keep the extent exactly `capacity` sectors.
        let n = (data.len() as u64).min(bytes - off) as usize;
        flat.write_all_at(&data[..n], off)
            .map_err(io("write", flat_name))
    })?;
    desc.write_all(descriptor_text(flat_name, capacity, opts).as_bytes())
        .map_err(io("write the descriptor for", flat_name))
}

/// The descriptor of a monolithicFlat disk of `capacity` sectors whose extent is the file
/// `flat_name` (in the same directory): for callers that have the extent already, such as a
/// copy of a raw disk whose size is a whole number of sectors.
pub fn descriptor_text(flat_name: &str, capacity: u64, opts: &VmdkOptions) -> String {
    let extent = ExtentLine {
        access: Access::ReadWrite,
        sectors: capacity,
        kind: "FLAT".into(),
        file: Some(flat_name.to_string()),
        offset: 0,
    };
    descriptor::render("monolithicFlat", &extent, capacity, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_names() {
        assert_eq!(extent_name("root.vmdk"), "root-flat.vmdk");
        assert_eq!(extent_name("root"), "root-flat.vmdk");
    }
}
