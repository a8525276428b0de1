//! Reading ext2/ext3/ext4 images (placeholder).
