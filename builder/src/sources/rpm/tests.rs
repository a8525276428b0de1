//! Unit tests of the package reader over the shared fixtures; the comparisons with rpm itself
//! are in `builder/tests/sources_rpm.rs`.

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/rpm")
        .join(name)
}

#[test]
fn reads_v4_and_v6_headers() {
    let v4 = read_package(&fixture("v4-rpm-basic-2.3.4-5.el9.noarch.rpm")).unwrap();
    assert_eq!(v4.nevra(), "rpm-basic-2.3.4-5.el9.noarch");
    assert_eq!(v4.epoch, Some(1));
    assert_eq!(v4.format_version, 4);
    assert_eq!(v4.files.len(), 11);
    assert!(v4.files.iter().any(|f| f.is_ghost()));
    let v6 = read_package(&fixture("v6-rpm-file-attrs-1.0-1.noarch.rpm")).unwrap();
    assert_eq!(v6.format_version, 6);
    let caps = v6
        .files
        .iter()
        .find(|f| f.path.ends_with(b"/with_caps"))
        .unwrap();
    assert_eq!(
        caps.caps.as_deref(),
        Some("cap_sys_ptrace,cap_sys_admin=ep")
    );
}

#[test]
fn damaged_packages_name_the_offset() {
    let bytes = std::fs::read(fixture("v4-rpm-basic-2.3.4-5.el9.noarch.rpm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.rpm");
    for cut in [0usize, 50, 96, 100, 200, 4500, 5000] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = read_package(&p).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("cannot read RPM header of") && text.contains("at offset"),
            "{cut}: {text}"
        );
    }
    let mut flipped = bytes.clone();
    flipped[96 + 8] = 0xff; // signature index count
    std::fs::write(&p, &flipped).unwrap();
    assert!(read_package(&p).is_err());
}

#[test]
fn globs_are_sorted_and_must_match() {
    let dir = fixture("");
    let pattern = format!("{}/*-rpm-basic-*.rpm", dir.display());
    let found = expand_globs(&[pattern.clone(), pattern]).unwrap();
    assert_eq!(found.len(), 4);
    assert!(found.windows(2).all(|w| w[0] < w[1]));
    let e = expand_globs(&[format!("{}/nothing-*.rpm", dir.display())]).unwrap_err();
    assert!(matches!(e, RpmError::NoMatch(_)));
    assert!(expand_globs(&["[".to_string()]).is_err());
}
