//! The `Dockerfile`, built and run for real: the image runs vipgate as uid 65532, takes
//! its config from VIPGATE_CONFIG (a mounted /etc/vipgate), logs JSON lines, serves, and
//! `docker stop` (SIGTERM) drains and exits 0.
//!
//! It needs a Docker daemon and the two base images, which CI cannot pull (no registry
//! but crates.io, PyPI, npm and Debian's). Name them to run it, e.g. a Rust image and a
//! Debian one made locally with debootstrap and `docker import`:
//!
//! ```sh
//! VIPGATE_DOCKER_RUST_IMAGE=local/rust:stable VIPGATE_DOCKER_RUNTIME_IMAGE=local/bookworm:minbase \
//!     cargo test --test container -- --nocapture
//! ```
//!
//! Without them it prints why it is skipped. The build uses the host's network
//! (`--network host`) to fetch crates.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap_or_else(|e| panic!("run docker {args:?}: {e}"))
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the test's container by name, whatever happened.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[test]
fn the_image_runs_unprivileged_serves_and_drains_on_docker_stop() {
    let (Ok(rust), Ok(runtime)) =
        (std::env::var("VIPGATE_DOCKER_RUST_IMAGE"), std::env::var("VIPGATE_DOCKER_RUNTIME_IMAGE"))
    else {
        println!("skipped: set VIPGATE_DOCKER_RUST_IMAGE and VIPGATE_DOCKER_RUNTIME_IMAGE to build the Dockerfile");
        return;
    };
    let tag = format!("vipgate-test:{}", std::process::id());
    let root = env!("CARGO_MANIFEST_DIR");
    let build = Command::new("docker")
        .args(["build", "--network", "host", "--build-arg"])
        .arg(format!("RUST_IMAGE={rust}"))
        .arg("--build-arg")
        .arg(format!("RUNTIME_IMAGE={runtime}"))
        .args(["-t", &tag, root])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    ok(&build, "docker build");

    let backend = Backend::echo_any("b1");
    let (bind, admin) = (free_addr(), free_addr());
    let dir = temp_path("container-etc", "d");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = format!(
        "[admin]\nbind = \"{admin}\"\n\n{}",
        service_toml("", "s", bind, "balance = \"roundrobin\"\n", &[("b1", backend.addr, "")])
    );
    std::fs::write(dir.join("vipgate.toml"), cfg).unwrap();
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&dir).status();

    let name = format!("vipgate-test-{}", std::process::id());
    let _guard = Container(name.clone());
    let mount = format!("{}:/etc/vipgate:ro", dir.display());
    ok(&docker(&["run", "-d", "--name", &name, "--network", "host", "-v", &mount, &tag]), "docker run");

    let served = eventually(WAIT, || try_which_server(bind));
    let logs = || {
        let o = docker(&["logs", &name]);
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert_eq!(served.as_deref(), Some("b1"), "no answer through the container:\n{}", logs());
    let top = ok(&docker(&["top", &name, "-o", "uid,pid,cmd"]), "docker top");
    assert!(top.lines().any(|l| l.trim_start().starts_with("65532 ") && l.contains("vipgate run")), "{top}");
    let first = logs().lines().next().unwrap_or_default().to_string();
    let json: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(json["message"], "starting");

    // An open connection, then docker stop: vipgate drains and exits 0 once it ends.
    let (mut held, _) = hold(bind);
    let stop = std::thread::spawn({
        let name = name.clone();
        move || docker(&["stop", "-t", "20", &name])
    });
    std::thread::sleep(Duration::from_millis(500));
    use std::io::Write;
    held.write_all(b"still here\n").unwrap();
    assert_eq!(read_line(&mut held).unwrap(), "still here", "a draining connection must still work");
    drop(held);
    ok(&stop.join().unwrap(), "docker stop");
    let code = ok(&docker(&["inspect", &name, "--format", "{{.State.ExitCode}}"]), "inspect");
    assert_eq!(code.trim(), "0", "{}", logs());
    assert!(logs().contains("listeners closed; draining"), "{}", logs());
    let _ = docker(&["rmi", "-f", &tag]);
    let _ = std::fs::remove_dir_all(&dir);
}
