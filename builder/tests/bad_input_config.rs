//! Bad definitions and bad build inputs given to the real CLI: an `extends` cycle, unknown keys,
//! a definition that extends a device, a kernel that is not a kernel, an init that is
//! dynamically linked or missing, and bad command-line values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input_common;

use std::ffi::OsString;
use std::path::Path;

use bad_input_common::*;

fn image(p: &Path) -> Vec<OsString> {
    vec!["--image".into(), p.into()]
}

#[test]
fn extends_cycle() {
    let s = Scratch::new();
    std::fs::write(s.input("a.toml"), "extends = \"b.toml\"\nname = \"a\"\n").unwrap();
    std::fs::write(s.input("b.toml"), "extends = \"c.toml\"\nname = \"b\"\n").unwrap();
    std::fs::write(s.input("c.toml"), "extends = \"a.toml\"\nname = \"c\"\n").unwrap();
    let e = bad_build(
        &s,
        &image(&s.input("a.toml")),
        &[],
        Expect {
            code: INPUT,
            needles: &["a.toml", "extends itself", "b.toml", "c.toml"],
        },
    );
    assert!(e.contains(" -> "), "the chain is shown: {e}");
}

#[test]
fn unknown_keys() {
    let s = Scratch::new();
    for (file, text, key) in [
        ("top.toml", "name = \"x\"\ncolour = \"red\"\n", "colour"),
        (
            "table.toml",
            "name = \"x\"\n[filesystem]\nfs = \"ext4\"\nblocksize = 1\n",
            "blocksize",
        ),
        (
            "layer.toml",
            "name = \"x\"\n[[layers]]\nbuiltin = true\nowner_name = \"root\"\n",
            "owner_name",
        ),
    ] {
        let p = s.input(file);
        std::fs::write(&p, text).unwrap();
        bad_build(
            &s,
            &image(&p),
            &[],
            Expect {
                code: INPUT,
                needles: &[file, key, "unknown field"],
            },
        );
    }
    bad_build(
        &s,
        &["--set".into(), "filesystem.colour=red".into()],
        &[],
        Expect {
            code: INPUT,
            needles: &["--set filesystem.colour=red", "colour"],
        },
    );
}

#[test]
fn definition_extending_a_device_or_a_directory() {
    let s = Scratch::new();
    for (file, parent) in [("zero.toml", "/dev/zero"), ("dir.toml", "/etc")] {
        let p = s.input(file);
        std::fs::write(&p, format!("extends = \"{parent}\"\nname = \"x\"\n")).unwrap();
        bad_build(
            &s,
            &image(&p),
            &[],
            Expect {
                code: INPUT,
                needles: &[parent, "not a regular file"],
            },
        );
    }
}

#[test]
fn kernel_that_is_not_a_kernel() {
    let s = Scratch::new();
    bad_build(
        &s,
        &["--set".into(), "kernel.path=/etc/passwd".into()],
        &[],
        Expect {
            code: INPUT,
            needles: &["/etc/passwd"],
        },
    );
    let p = s.input("vmlinuz");
    std::fs::write(&p, vec![0x4d; 64 << 10]).unwrap();
    let mut set = OsString::from("kernel.path=");
    set.push(&p);
    bad_build(
        &s,
        &["--set".into(), set],
        &[],
        Expect {
            code: INPUT,
            needles: &["vmlinuz"],
        },
    );
}

#[test]
fn dynamically_linked_init() {
    let s = Scratch::new();
    bad_build(
        &s,
        &["--init".into(), "/bin/ls".into()],
        &[],
        Expect {
            code: INPUT,
            needles: &["/bin/ls", "interpreter"],
        },
    );
}

#[test]
fn init_that_is_missing_or_not_elf() {
    let s = Scratch::new();
    let missing = s.input("no-init");
    bad_build(
        &s,
        &["--init".into(), missing.into()],
        &[],
        Expect {
            code: INPUT,
            needles: &["no-init"],
        },
    );
    let script = s.input("init.sh");
    std::fs::write(&script, "#!/bin/sh\nexec /bin/sh\n").unwrap();
    bad_build(
        &s,
        &["--init".into(), script.into()],
        &[],
        Expect {
            code: INPUT,
            needles: &["init.sh", "ELF"],
        },
    );
}

#[test]
fn bad_command_line_values() {
    let s = Scratch::new();
    bad_build(
        &s,
        &["--layer".into(), "zip=/tmp/x.zip".into()],
        &[],
        Expect {
            code: INPUT,
            needles: &["--layer zip", "dir, tar, rpm and deb"],
        },
    );
    bad_build(
        &s,
        &["--set".into(), "vm.memory=lots".into()],
        &[],
        Expect {
            code: INPUT,
            needles: &["--set vm.memory=lots", "memory"],
        },
    );
    bad_build(
        &s,
        &[],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
        Expect {
            code: INPUT,
            needles: &["SOURCE_DATE_EPOCH", "yesterday"],
        },
    );
}
