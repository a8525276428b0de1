//! The OpenVZ package: a precreated OS template (`<dist>-<version>-<arch>[-<extra>].tar.gz`,
//! root at the archive's top level, as `vzctl create --ostemplate` unpacks it) and a
//! `ve-<name>.conf-sample` with the container's resources, for `vzctl create --config <name>`.
//!
//! The template's `/sbin/init` is the benchmark init (the finishing step put it there for every
//! target), which detects the container and runs in container mode.

pub mod gzip;
pub mod template;

use std::fs::File;
use std::io::{BufWriter, Write};

use flate2::Compression;
use gzip::ParallelGz;

use super::{write_text, CheckContext, Output, PackageContext, Packager, TargetError};
use crate::definition::{OpenvzCompression, OpenvzSpec};
use crate::manifest::Role;

/// gzip level of the template. Level 1 (zlib-rs's quick strategy) compresses several times
/// faster than the usual 6 for a template about 15 % larger; the template is made on every
/// build but unpacked once per container, and `gzip -9` can redo it where size matters.
pub const GZIP_LEVEL: u32 = 1;

/// The OpenVZ packager.
pub struct Openvz;

/// `<dist>-<version>-<arch>[-<extra>]`, the name vzctl knows the template by.
pub fn template_name(spec: &OpenvzSpec) -> String {
    let mut name = format!("{}-{}-{}", spec.dist, spec.version, spec.arch);
    if let Some(extra) = &spec.extra {
        name.push('-');
        name.push_str(extra);
    }
    name
}

fn check_part(what: &str, value: &str) -> Result<(), TargetError> {
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._".contains(&b))
    {
        return Err(TargetError::Invalid(format!(
            "openvz.{what} {value:?}: use letters, digits, '.' and '_' (vzctl splits template names at '-')"
        )));
    }
    Ok(())
}

fn check_spec(spec: &OpenvzSpec) -> Result<(), TargetError> {
    check_part("dist", &spec.dist)?;
    check_part("version", &spec.version)?;
    check_part("arch", &spec.arch)?;
    if let Some(d) = &spec.distribution {
        check_part("distribution", d)?;
    }
    if let Some(extra) = &spec.extra {
        check_part("extra", extra)?;
    }
    Ok(())
}

impl Packager for Openvz {
    fn check(&self, cx: &CheckContext<'_>) -> Result<(), TargetError> {
        check_spec(&cx.definition.openvz)
    }

    fn package(&self, cx: &PackageContext<'_>) -> Result<Vec<Output>, TargetError> {
        let spec = &cx.definition.openvz;
        check_spec(spec)?;
        let template = template_name(spec);
        let file = match spec.compression {
            OpenvzCompression::Gz => format!("{template}.tar.gz"),
            OpenvzCompression::Xz => format!("{template}.tar.xz"),
        };
        let path = cx.artefacts.staged(&format!("openvz/{file}"))?;
        let io = |source| TargetError::Io {
            path: path.clone(),
            source,
        };
        let out = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(io)?);
        match spec.compression {
            OpenvzCompression::Gz => {
                // No name and no time in the gzip header: the same tree gives the same bytes.
                let mut gz = ParallelGz::new(out, Compression::new(GZIP_LEVEL), 0);
                template::write_tar(&cx.finished.tree, &mut gz).map_err(io)?;
                gz.finish().map_err(io)?.flush().map_err(io)?;
            }
            OpenvzCompression::Xz => {
                let mut xz = xz2::write::XzEncoder::new(out, 6);
                template::write_tar(&cx.finished.tree, &mut xz).map_err(io)?;
                xz.finish().map_err(io)?.flush().map_err(io)?;
            }
        }
        let conf = conf_sample(cx.artefacts.name(), &template, spec, cx.definition.vm.vcpus);
        let conf_file = format!("openvz/ve-{}.conf-sample", cx.artefacts.name());
        write_text(cx, &conf_file, &conf)?;
        Ok(vec![
            Output {
                role: Role::Template,
                path: format!("openvz/{file}"),
            },
            Output {
                role: Role::Config,
                path: conf_file,
            },
        ])
    }
}

/// `ve-<name>.conf-sample`, a vswap-style configuration (vzctl 4).
pub fn conf_sample(name: &str, template: &str, spec: &OpenvzSpec, vcpus: u32) -> String {
    let cpus = spec.cpus.unwrap_or(vcpus);
    let distribution = spec
        .distribution
        .as_ref()
        .map(|d| format!("DISTRIBUTION=\"{d}\"\n"))
        .unwrap_or_default();
    format!(
        "# OpenVZ container configuration sample written by imgbuild {version} for {name}.\n\
         # Install: cp {template}.tar.* /vz/template/cache/ && cp ve-{name}.conf-sample /etc/vz/conf/\n\
         # Create:  vzctl create CTID --ostemplate {template} --config {name}\n\
         PHYSPAGES=\"0:{phys}\"\n\
         SWAPPAGES=\"0:{swap}\"\n\
         DISKSPACE=\"{disk}:{disk}\"\n\
         DISKINODES=\"{inodes}:{inodes}\"\n\
         QUOTATIME=\"0\"\n\
         CPUUNITS=\"{units}\"\n\
         CPUS=\"{cpus}\"\n\
         ONBOOT=\"no\"\n\
         OSTEMPLATE=\"{template}\"\n\
         {distribution}",
        version = env!("CARGO_PKG_VERSION"),
        phys = spec.physpages,
        swap = spec.swappages,
        disk = spec.diskspace,
        inodes = spec.diskinodes,
        units = spec.cpuunits,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_conf() {
        let spec = OpenvzSpec {
            dist: "scientific".into(),
            version: "6".into(),
            extra: Some("bench".into()),
            ..OpenvzSpec::default()
        };
        assert_eq!(template_name(&spec), "scientific-6-x86_64-bench");
        let conf = conf_sample("sl6", "scientific-6-x86_64-bench", &spec, 2);
        for line in [
            "PHYSPAGES=\"0:512M\"",
            "DISKSPACE=\"2G:2G\"",
            "DISKINODES=\"200000:200000\"",
            "CPUS=\"2\"",
            "--config sl6",
        ] {
            assert!(conf.contains(line), "{line}\n{conf}");
        }
        assert!(check_part("dist", "scientific-linux").is_err());
        assert!(!conf.contains("DISTRIBUTION"));
        let spec = OpenvzSpec {
            distribution: Some("redhat".into()),
            ..spec
        };
        let conf = conf_sample("sl6", "scientific-6-x86_64-bench", &spec, 2);
        assert!(
            conf.ends_with("OSTEMPLATE=\"scientific-6-x86_64-bench\"\nDISTRIBUTION=\"redhat\"\n"),
            "{conf}"
        );
    }
}
