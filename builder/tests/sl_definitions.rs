//! The Scientific Linux family definitions load and say what an EL guest of each release needs,
//! with placeholder inputs; `--set` errors and a missing root tarball are reported clearly by
//! the real `imgbuild` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sl_common;

use std::process::{Command, Output};

use imgbuild::definition::{
    check_inputs, load, FsType, InitLibc, ScsiAdapter, Selinux, SetArg, XenGuestType,
};
use imgbuild::target::openvz::template_name;
use sl_common::image;

fn imgbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn el_definitions_load_with_placeholder_inputs() {
    struct Want {
        file: &'static str,
        fs: FsType,
        release: &'static str,
        os_release: bool,
        extra_release: &'static [&'static str],
        guest_os: &'static str,
        hw: u32,
        adapter: ScsiAdapter,
        template: &'static str,
        libc: InitLibc,
        hostname_in_network: bool,
        grub_conf: bool,
    }
    let wants = [
        Want {
            file: "sl5-bench.toml",
            fs: FsType::Ext3,
            release: "Scientific Linux SL release 5.11 (Boron)",
            os_release: false,
            extra_release: &[],
            guest_os: "rhel5-64",
            hw: 7,
            adapter: ScsiAdapter::Lsilogic,
            template: "scientific-5-x86_64-bench",
            libc: InitLibc::Musl,
            hostname_in_network: true,
            grub_conf: true,
        },
        Want {
            file: "sl6-bench.toml",
            fs: FsType::Ext4,
            release: "Scientific Linux release 6.10 (Carbon)",
            os_release: false,
            extra_release: &["/etc/sl-release"],
            guest_os: "rhel6-64",
            hw: 8,
            adapter: ScsiAdapter::Pvscsi,
            template: "scientific-6-x86_64-bench",
            libc: InitLibc::Musl,
            hostname_in_network: true,
            grub_conf: true,
        },
        Want {
            file: "sl7-bench.toml",
            fs: FsType::Ext4,
            release: "Scientific Linux release 7.9 (Nitrogen)",
            os_release: true,
            extra_release: &[],
            guest_os: "rhel7-64",
            hw: 10,
            adapter: ScsiAdapter::Pvscsi,
            template: "scientific-7-x86_64-bench",
            libc: InitLibc::Gnu,
            hostname_in_network: false,
            grub_conf: false,
        },
        Want {
            file: "centos7-bench.toml",
            fs: FsType::Ext4,
            release: "CentOS Linux release 7.9.2009 (Core)",
            os_release: true,
            extra_release: &["/etc/centos-release"],
            guest_os: "centos7-64",
            hw: 10,
            adapter: ScsiAdapter::Pvscsi,
            template: "centos-7-x86_64-bench",
            libc: InitLibc::Gnu,
            hostname_in_network: false,
            grub_conf: false,
        },
    ];
    for w in wants {
        let loaded = load(Some(&image(w.file)), &[]).unwrap_or_else(|e| panic!("{}: {e}", w.file));
        let d = loaded.definition;
        let name = w.file.trim_end_matches(".toml");
        assert_eq!(d.name, name);
        assert_eq!(d.filesystem.fs, w.fs, "{name}");
        assert_eq!(d.os.redhat_release.as_deref(), Some(w.release), "{name}");
        assert_eq!(d.os.os_release, w.os_release, "{name}");
        assert_eq!(d.os.release_files, w.extra_release, "{name}");
        assert_eq!(d.xen.guest_type, XenGuestType::Pv, "{name}");
        assert_eq!(d.vmware.guest_os, w.guest_os, "{name}");
        assert_eq!(d.vmware.hw_version, w.hw, "{name}");
        assert!(
            imgbuild::target::vmware::HW_VERSIONS.contains(&d.vmware.hw_version),
            "{name}"
        );
        assert_eq!(d.vmware.adapter, w.adapter, "{name}");
        assert_eq!(template_name(&d.openvz), w.template, "{name}");
        let distribution = if name.starts_with("centos") {
            "centos"
        } else {
            "redhat"
        };
        assert_eq!(
            d.openvz.distribution.as_deref(),
            Some(distribution),
            "{name}"
        );
        assert_eq!(d.init.libc, w.libc, "{name}");
        assert_eq!(d.el.selinux, Selinux::Disabled, "{name}");
        assert!(d.el.network, "{name}");
        assert_eq!(d.el.network_hostname, w.hostname_in_network, "{name}");
        assert_eq!(d.el.grub_conf, w.grub_conf, "{name}");
        assert!(d.filesystem.fstab, "{name}");
        // The root layer is named and points at a placeholder that does not exist.
        let rootfs = d
            .layers
            .iter()
            .find(|l| l.name.as_deref() == Some("rootfs"))
            .unwrap();
        let placeholder = rootfs.tar.clone().unwrap();
        assert!(!placeholder.exists(), "{}", placeholder.display());
        let missing = check_inputs(&d).unwrap_err();
        assert_eq!(missing.key, "rootfs.tar", "{name}");
        // --set fills it in without editing the file, and the build inputs are then complete.
        let tar = tempfile::NamedTempFile::new().unwrap();
        let set: SetArg = format!("rootfs.tar={}", tar.path().display())
            .parse()
            .unwrap();
        let d = load(Some(&image(w.file)), &[set]).unwrap().definition;
        check_inputs(&d).unwrap();
    }
    // sl7's kernel command line keeps the eth0 name the network scripts configure.
    let d = load(Some(&image("sl7-bench.toml")), &[])
        .unwrap()
        .definition;
    let cmdline = d.kernel.unwrap().cmdline.unwrap();
    assert!(cmdline.contains("net.ifnames=0"), "{cmdline}");
}

#[test]
fn build_without_the_root_tarball_names_the_file_and_the_key() {
    let out = tempfile::tempdir().unwrap();
    let o = imgbuild(&[
        "build",
        "--image",
        image("sl6-bench.toml").to_str().unwrap(),
        "--target",
        "openvz",
        "--out",
        out.path().join("o").to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("rootfs.tar"), "{e}");
    assert!(e.contains("--set rootfs.tar=PATH"), "{e}");
    assert!(
        e.contains("images/required/set-rootfs.tar-to-your-template.tar.gz"),
        "{e}"
    );
    assert!(e.contains("does not exist"), "{e}");
    // Nothing was written.
    assert!(!out.path().join("o/manifest.json").exists());
}

#[test]
fn set_errors_are_clear() {
    let sl6 = image("sl6-bench.toml");
    let sl6 = sl6.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    let run = |set: &str| {
        let o = imgbuild(&[
            "build", "--image", sl6, "--target", "openvz", "--out", out, "--set", set,
        ]);
        assert_eq!(o.status.code(), Some(2), "--set {set}: {}", stderr(&o));
        stderr(&o)
    };
    // Unknown key: at the top level, inside a table, inside a named layer.
    let e = run("colour=red");
    assert!(
        e.contains("--set colour=red") && e.contains("unknown key \"colour\""),
        "{e}"
    );
    assert!(e.contains("nor the name of a layer"), "{e}");
    let e = run("filesystem.colour=red");
    assert!(
        e.contains("--set filesystem.colour=red") && e.contains("colour"),
        "{e}"
    );
    let e = run("rootfs.colour=red");
    assert!(
        e.contains("--set rootfs.colour=red") && e.contains("colour"),
        "{e}"
    );
    let e = run("el.selinux=off");
    assert!(
        e.contains("--set el.selinux=off") && e.contains("off"),
        "{e}"
    );
    // Wrong type.
    let e = run("vm.memory=lots");
    assert!(
        e.contains("--set vm.memory=lots") && e.contains("memory"),
        "{e}"
    );
    let e = run("filesystem.fs=ext5");
    assert!(e.contains("--set filesystem.fs=ext5"), "{e}");
    let e = run("vm=1");
    assert!(e.contains("--set vm=1"), "{e}");
    // Missing file, given on the command line.
    let e = run("rootfs.tar=/nonexistent/scientific-6-x86_64.tar.gz");
    assert!(
        e.contains("rootfs.tar = /nonexistent/scientific-6-x86_64.tar.gz")
            && e.contains("does not exist"),
        "{e}"
    );
    let tar = tempfile::NamedTempFile::new().unwrap();
    let o = imgbuild(&[
        "build",
        "--image",
        sl6,
        "--target",
        "openvz",
        "--out",
        out,
        "--set",
        &format!("rootfs.tar={}", tar.path().display()),
        "--set",
        "kernel.rpm=/nonexistent/kernel-2.6.32-754.el6.x86_64.rpm",
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("kernel.rpm = /nonexistent/kernel-2.6.32-754.el6.x86_64.rpm")
            && e.contains("--set kernel.rpm=PATH"),
        "{e}"
    );
    // Not KEY=VALUE.
    let o = imgbuild(&[
        "build",
        "--image",
        sl6,
        "--target",
        "openvz",
        "--set",
        "rootfs.tar",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not KEY=VALUE"), "{}", stderr(&o));
}

#[test]
fn el_base_validates_its_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let def = dir.path().join("bad.toml");
    let base = image("el-base.toml");
    for (extra, needle) in [
        ("[el]\ninterface = \"eth0; reboot\"\n", "el.interface"),
        (
            "[os]\nrelease_files = [\"etc/sl-release\"]\n",
            "os.release_files",
        ),
        (
            "[el]\nnetwork_hostname = true\n[os]\nhostname = \"bad name\"\n",
            "os.hostname",
        ),
        ("[xen]\nconsole = \"ttyX9\"\n", "xen.console"),
        ("[init]\nlibc = \"uclibc\"\n", "uclibc"),
    ] {
        std::fs::write(
            &def,
            format!("extends = \"{}\"\nname = \"bad\"\n{extra}", base.display()),
        )
        .unwrap();
        let e = load(Some(&def), &[]).unwrap_err().to_string();
        assert!(e.contains(needle), "{extra}: {e}");
    }
}
