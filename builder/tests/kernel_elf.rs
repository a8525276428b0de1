//! goblin checks of the init binary against real binaries: a static program compiled here, the
//! host's dynamic `/bin/ls`, a text file, an object file, and an ELF header for another machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kernel_support;

use std::fs;

use imgbuild::kernel::elf_check::{check_static_executable, ElfCheckError, EM_X86_64};
use imgbuild::kernel::locate_init;
use kernel_support::{compile_c, have, require};

const HELLO: &str = "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n";

#[test]
fn static_binaries_pass() {
    if !have("gcc") {
        require("gcc is not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let exe = compile_c(d.path(), "static", HELLO, &["-static"]);
    let ok = check_static_executable(&exe, EM_X86_64).unwrap();
    assert_eq!(ok.machine, EM_X86_64);
    assert!(!ok.pie);
    assert_eq!(ok.size, fs::metadata(&exe).unwrap().len());
    let debug = compile_c(d.path(), "static_g", HELLO, &["-static", "-g"]);
    assert!(
        check_static_executable(&debug, EM_X86_64)
            .unwrap()
            .debug_bytes
            > 0
    );
    let stripped = compile_c(d.path(), "static_s", HELLO, &["-static", "-s"]);
    assert_eq!(
        check_static_executable(&stripped, EM_X86_64)
            .unwrap()
            .debug_bytes,
        0
    );
    // static-pie is what Rust's crt-static produces: ET_DYN without an interpreter.
    let pie = compile_c(d.path(), "static_pie", HELLO, &["-static-pie", "-fPIE"]);
    assert!(check_static_executable(&pie, EM_X86_64).unwrap().pie);
}

#[test]
fn dynamic_text_object_and_foreign_binaries_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let err = check_static_executable("/bin/ls".as_ref(), EM_X86_64).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ElfCheckError::Dynamic { .. }), "{msg}");
    assert!(
        msg.contains("/bin/ls") && msg.contains("interpreter"),
        "{msg}"
    );
    eprintln!("{msg}");

    let text = d.path().join("init.sh");
    fs::write(&text, "#!/bin/sh\nexec /bin/sh\n").unwrap();
    let err = check_static_executable(&text, EM_X86_64).unwrap_err();
    assert!(matches!(err, ElfCheckError::NotElf { .. }), "{err}");
    assert!(err.to_string().contains("init.sh"), "{err}");

    // A real x86_64 ELF header with e_machine changed to AArch64 (183).
    let mut foreign = fs::read("/bin/ls").unwrap();
    foreign[18..20].copy_from_slice(&183u16.to_le_bytes());
    let path = d.path().join("aarch64-init");
    fs::write(&path, &foreign).unwrap();
    let err = check_static_executable(&path, EM_X86_64).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ElfCheckError::WrongMachine {
                found_code: 183,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("aarch64-init") && msg.contains("X86_64"),
        "{msg}"
    );
    eprintln!("{msg}");

    if have("gcc") {
        let src = d.path().join("o.c");
        fs::write(&src, "int f(void) { return 1; }\n").unwrap();
        let obj = d.path().join("o.o");
        assert!(std::process::Command::new("gcc")
            .args(["-c", "-o"])
            .arg(&obj)
            .arg(&src)
            .status()
            .unwrap()
            .success());
        let err = check_static_executable(&obj, EM_X86_64).unwrap_err();
        assert!(
            matches!(err, ElfCheckError::NotExecutable { e_type: 1, .. }),
            "{err}"
        );
    }
    let err = check_static_executable(&d.path().join("absent"), EM_X86_64).unwrap_err();
    assert!(matches!(err, ElfCheckError::Read { .. }), "{err}");
}

#[test]
fn locating_the_workspace_init() {
    let err = locate_init(Some("/nonexistent/imgbuild-init".as_ref())).unwrap_err();
    assert!(
        err.to_string()
            .contains("cargo build -p imgbuild-init --release"),
        "{err}"
    );
    // The workspace's own init, when it has been built: it must pass the checks.
    match locate_init(None) {
        Ok(path) => {
            let ok = check_static_executable(&path, EM_X86_64).unwrap();
            eprintln!("{}: static, {} bytes", path.display(), ok.size);
        }
        Err(e) => eprintln!("skipping the workspace init check: {e}"),
    }
}
