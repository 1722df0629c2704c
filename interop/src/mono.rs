//! Mono (apt `mono-complete`): C# peers under `interop/mono/`, compiled with `mcs` on first
//! use into a temporary directory and run with `mono`. A missing Mono fails the test with a
//! message saying how to install it; it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use tokio::process::{Child, Command};

/// The assemblies WCF programs reference.
pub const WCF_REFERENCES: [&str; 3] = [
    "System.ServiceModel.dll",
    "System.Runtime.Serialization.dll",
    "System.Xml.dll",
];

/// `interop/mono`, where the C# sources live.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mono")
}

/// Fails the test unless `mono` and `mcs` are installed.
pub fn require_mono() {
    for tool in ["mono", "mcs"] {
        let ok = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{tool} is not installed: run scripts/test.sh, which installs the mono-complete package"
        );
    }
}

/// Compiles `sources` (file names under `interop/mono`) into `NAME.exe` with the WCF
/// references, unless an executable newer than every source exists; returns its path.
/// Compilations are serialised within the test process (tests run in parallel threads).
pub fn compile(name: &str, sources: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    require_mono();
    let out_dir = std::env::temp_dir().join("ferry-interop-mono");
    std::fs::create_dir_all(&out_dir).expect("create the mono output directory");
    let exe = out_dir.join(format!("{name}.exe"));
    let paths: Vec<PathBuf> = sources.iter().map(|s| source_dir().join(s)).collect();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = modified(&exe).is_some_and(|built| {
        paths
            .iter()
            .all(|p| modified(p).is_some_and(|src| src <= built))
    });
    if !fresh {
        // A unique temporary name, renamed into place: another test process (nextest runs
        // tests as separate processes) may be compiling the same program.
        let tmp = out_dir.join(format!("{name}.{}.tmp.exe", std::process::id()));
        let output = std::process::Command::new("mcs")
            .args(["-nologo", "-debug-", "-optimize+", "-target:exe"])
            .arg(format!("-out:{}", tmp.display()))
            .args(WCF_REFERENCES.iter().map(|r| format!("-r:{r}")))
            .args(&paths)
            .output()
            .expect("mcs runs");
        assert!(
            output.status.success(),
            "mcs failed on {sources:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::rename(&tmp, &exe).expect("move the compiled program into place");
    }
    exe
}

/// Starts `mono EXE args...` with stdout piped and stderr inherited, killed on drop.
pub fn run(exe: &Path, args: &[String]) -> Child {
    Command::new("mono")
        .arg(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("mono starts")
}
