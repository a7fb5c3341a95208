//! Sandboxes for real: start through the API, work through the gateway,
//! and try to get out from inside.

use cloudcode_proto::message::{Op, Reply};
use cloudcode_proto::path::WorkspacePath;

use crate::common::*;

/// Runners of `project` alive on this machine: one per sandbox.
fn runner_count(project: &str) -> usize {
    runners(project).len()
}

fn runners(project: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let parts: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                    parts.first().is_some_and(|p| p.ends_with(b"cloudcode-runner"))
                        && parts.contains(&project.as_bytes())
                })
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Runners of `project` started by `server`: other servers on this machine
/// (other tests, other people's) may run a project of the same name.
fn runner_count_of(server: &TestServer, project: &str) -> usize {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
    };
    runners(project)
        .into_iter()
        .filter(|runner| {
            let mut pid = *runner;
            while let Some(up) = parent(pid).filter(|p| *p > 1) {
                if up == server.pid() {
                    return true;
                }
                pid = up;
            }
            false
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn start_is_idempotent_ready_and_reachable_through_the_gateway() {
    // The binary: its sandboxes are told apart from other tests' by its pid.
    let server = TestServer::binary(&[]);
    server.create("alpha", "python").await;
    let (a, b) = tokio::join!(server.start_project("alpha"), server.start_project("alpha"));
    assert_eq!(a["ideUrl"], b["ideUrl"]);
    assert_eq!(runner_count_of(&server, "alpha"), 1, "two starts made two sandboxes");
    assert_eq!(
        a["previewUrl"],
        format!("http://alpha.preview.localhost:{}/", server.port)
    );

    let mut client = server.ide_client("alpha", &a).await;
    let (main, _) = client
        .read_file(&WorkspacePath::parse("main.py").unwrap())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&main).contains("Hello from cloudcode"));
    client
        .write_file(&WorkspacePath::parse("saved.txt").unwrap(), b"kept", None)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(server.data.join("storage/code/alpha/saved.txt")).unwrap(),
        b"kept"
    );

    // The template's app serves the preview origin, through the sandbox.
    let term = open_terminal(&client).await;
    run(&mut client, term, "python3 main.py > /tmp/app.log 2>&1 & disown").await;
    let preview_host = format!("alpha.preview.localhost:{}", server.port);
    let mut served = String::new();
    for _ in 0..100 {
        let (status, body) = raw_request(server.port, "GET", "/hello", Some(&preview_host), None, None).await;
        if status == 200 {
            served = body.to_string();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        served.contains("Hello from cloudcode") && served.contains("/hello"),
        "{served}"
    );

    // The IDE token is not valid on another project's origin.
    let (status, _) = raw_request(
        server.port,
        "GET",
        "/v1/health",
        Some(&format!("beta.ide.localhost:{}", server.port)),
        None,
        None,
    )
    .await;
    assert_eq!(status, 503, "a project that is not running");
}

#[tokio::test(flavor = "multi_thread")]
async fn from_inside_the_sandbox_nothing_else_is_reachable() {
    let server = TestServer::start(&[]);
    server.create("inside", "python").await;
    server.create("neighbour", "node-js").await;
    let started = server.start_project("inside").await;
    server.start_project("neighbour").await;
    std::fs::write(
        server.data.join("sandboxes/neighbour/workspace/beta-secret.txt"),
        "beta's",
    )
    .unwrap();
    let mut client = server.ide_client("inside", &started).await;
    let term = open_terminal(&client).await;

    let out = run(&mut client, term, "id -u; hostname").await;
    assert!(out.contains("1000\r\ninside\r\n"), "{out}");

    let out = run(
        &mut client,
        term,
        "ls /storage/code; ls /root 2>&1; cat /etc/shadow 2>&1 | head -1",
    )
    .await;
    assert!(out.contains("inside") && !out.contains("neighbour"), "{out}");
    assert!(out.contains("No such file"), "{out}");

    let data_dir = server.data.display().to_string();
    let out = run(
        &mut client,
        term,
        &format!("ls {data_dir} 2>&1; find / -name beta-secret.txt 2>/dev/null | head"),
    )
    .await;
    assert!(
        !out.contains("beta-secret.txt\r\n") && !out.contains("sandboxes"),
        "{out}"
    );

    let out = run(&mut client, term, "env").await;
    assert!(!out.contains(&server.token), "the API token leaked into the sandbox");
    assert!(
        !out.contains("CLOUDCODE_DATA_DIR") && !out.contains("RUST_LOG"),
        "{out}"
    );

    // The control plane's port and the host's loopback are out of reach.
    let probe = format!(
        "(exec 3<>/dev/tcp/127.0.0.1/{}) 2>/dev/null && echo REACHED-SERVER || echo NO-SERVER",
        server.port
    );
    let out = run(&mut client, term, &probe).await;
    assert!(
        out.contains("NO-SERVER\r\n") && !out.contains("REACHED-SERVER\r\n"),
        "{out}"
    );
    let out = run(
        &mut client,
        term,
        "ip -o link 2>/dev/null | wc -l; cat /proc/net/dev | grep -c :",
    )
    .await;
    assert!(out.contains("\r\n1\r\n"), "only loopback expected: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bombs_are_contained_without_hurting_other_sandboxes() {
    let server = TestServer::start(&["--sandbox-pids", "64", "--sandbox-memory-mib", "192"]);
    server.create("bomber", "python").await;
    server.create("bystander", "python").await;
    let started = server.start_project("bomber").await;
    let other = server.start_project("bystander").await;
    let mut client = server.ide_client("bomber", &started).await;
    let bystander = server.ide_client("bystander", &other).await;
    let term = open_terminal(&client).await;

    let out = run(
        &mut client,
        term,
        "python3 -c 'x = bytearray(600 * 1024 * 1024); print(\"ALLOCATED\")'; echo status=$?",
    )
    .await;
    assert!(
        !out.contains("ALLOCATED\r\n"),
        "600 MiB allocated under a 192 MiB cap: {out}"
    );
    assert!(out.contains("status=137") || out.contains("MemoryError"), "{out}");

    let storm = "import os, time\npids = []\ntry:\n    for i in range(300):\n        pid = os.fork()\n        if pid == 0:\n            time.sleep(20)\n            os._exit(0)\n        pids.append(pid)\n    print('FORKED-ALL')\nexcept OSError:\n    print('FORK-REFUSED-AT', len(pids))\nfor pid in pids:\n    os.kill(pid, 9)\n";
    client
        .write_file(&WorkspacePath::parse("storm.py").unwrap(), storm.as_bytes(), None)
        .await
        .unwrap();
    let out = run(&mut client, term, "python3 storm.py").await;
    assert!(
        out.contains("FORK-REFUSED-AT") && !out.contains("FORKED-ALL\r\n"),
        "{out}"
    );

    assert_eq!(bystander.request(Op::Ping).await.unwrap(), Reply::Pong);
    assert_eq!(
        client.request(Op::Ping).await.unwrap(),
        Reply::Pong,
        "the runner itself survived"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_ends_every_process_and_a_new_start_finds_every_file() {
    let server = TestServer::start(&[]);
    server.create("gamma", "node-js").await;
    let started = server.start_project("gamma").await;
    let mut client = server.ide_client("gamma", &started).await;
    let term = open_terminal(&client).await;
    run(&mut client, term, "echo from-shell > made.txt; sleep 8181 & disown").await;
    // The job is forked before the prompt returns but may exec a moment later.
    eventually("the background job started", || process_running("8181")).await;

    let (status, body) = server.api("POST", "/api/projects/gamma/stop", None).await;
    assert_eq!(status, 200, "{body}");
    eventually("sandbox processes gone", || {
        !process_running("8181") && runner_count("gamma") == 0
    })
    .await;
    assert_eq!(
        std::fs::read(server.data.join("storage/code/gamma/made.txt")).unwrap(),
        b"from-shell\n"
    );
    let (_, body) = server.api("GET", "/api/projects/gamma/status", None).await;
    assert_eq!(body["state"], "stopped");

    // A fresh workspace restores everything from storage.
    std::fs::remove_dir_all(server.data.join("sandboxes/gamma/workspace")).unwrap();
    let started = server.start_project("gamma").await;
    let client = server.ide_client("gamma", &started).await;
    let (data, _) = client
        .read_file(&WorkspacePath::parse("made.txt").unwrap())
        .await
        .unwrap();
    assert_eq!(data, b"from-shell\n");

    let (status, _) = server.api("DELETE", "/api/projects/gamma", None).await;
    assert_eq!(status, 204);
    assert_eq!(runner_count("gamma"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_runner_is_reported_then_restarted() {
    let server = TestServer::start(&[]);
    server.create("delta", "python").await;
    server.start_project("delta").await;
    // Kill the runner inside the sandbox, as a crash would.
    let runner = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.starts_with(b"/opt/cloudcode/cloudcode-runner") && c.windows(5).any(|w| w == b"delta"))
                .unwrap_or(false)
        })
        .expect("runner process");
    let pid: i32 = runner.file_name().to_str().unwrap().parse().unwrap();
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let mut reported = false;
    for _ in 0..100 {
        let (_, body) = server.api("GET", "/api/projects/delta/status", None).await;
        if body["state"] == "failed" {
            assert!(body["detail"].as_str().unwrap().contains("exited"), "{body}");
            reported = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reported, "a dead runner must not look running");
    let started = server.start_project("delta").await;
    let client = server.ide_client("delta", &started).await;
    assert_eq!(client.request(Op::Ping).await.unwrap(), Reply::Pong);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sandboxes_are_stopped_after_flushing_and_resume_intact() {
    let server = TestServer::start(&["--idle-timeout-secs", "2"]);
    server.create("sleepy", "python").await;
    let started = server.start_project("sleepy").await;
    {
        let mut client = server.ide_client("sleepy", &started).await;
        let term = open_terminal(&client).await;
        run(&mut client, term, "echo before-idle > idle.txt").await;
        client.close();
    }
    // Stopped once nobody is connected and nothing happens.
    let mut stopped = false;
    for _ in 0..150 {
        let (_, body) = server.api("GET", "/api/projects/sleepy/status", None).await;
        if body["state"] == "stopped" {
            stopped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(stopped, "idle sandbox never stopped");
    assert_eq!(runner_count("sleepy"), 0);
    assert_eq!(
        std::fs::read(server.data.join("storage/code/sleepy/idle.txt")).unwrap(),
        b"before-idle\n"
    );
    let started = server.start_project("sleepy").await;
    let client = server.ide_client("sleepy", &started).await;
    let (data, _) = client
        .read_file(&WorkspacePath::parse("idle.txt").unwrap())
        .await
        .unwrap();
    assert_eq!(data, b"before-idle\n");
}

/// A server killed with SIGKILL: its sandbox runs on (a crash of the
/// control plane is not one of the users' shells), and the next server on
/// the data directory takes it over with everything in it.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_with_9_loses_nothing_and_its_sandbox_is_taken_over() {
    let mut server = TestServer::binary(&[]);
    server.create("phoenix", "node-js").await;
    let started = server.start_project("phoenix").await;
    let mut client = server.ide_client("phoenix", &started).await;
    client
        .write_file(&WorkspacePath::parse("saved.txt").unwrap(), b"acknowledged", None)
        .await
        .unwrap();
    let term = open_terminal(&client).await;
    run(&mut client, term, "echo typed > typed.txt; sleep 7272 & disown").await;
    // The marker can come back before the background job has exec'd.
    eventually("the background job started", || process_running("7272")).await;
    let before = runners("phoenix");
    server.kill();
    assert_eq!(runners("phoenix"), before, "the sandbox died with the server");
    assert!(process_running("7272"));

    // The same data directory, a new server: the project runs, the same
    // sandbox, without anyone asking, and everything is there.
    let again = TestServer::restart(&server);
    // Taken over in the background, without anyone asking.
    wait_for_state(&again, "phoenix", "running").await;
    let started = again.start_project("phoenix").await;
    let client = again.ide_client("phoenix", &started).await;
    assert_eq!(
        client
            .read_file(&WorkspacePath::parse("saved.txt").unwrap())
            .await
            .unwrap()
            .0,
        b"acknowledged"
    );
    assert_eq!(
        client
            .read_file(&WorkspacePath::parse("typed.txt").unwrap())
            .await
            .unwrap()
            .0,
        b"typed\n"
    );
    assert_eq!(runners("phoenix"), before, "a second sandbox instead of the first");
    assert!(process_running("7272"));
}

/// The sandbox holds no descriptor of the terminal the server runs in, and
/// has no controlling terminal: nothing to inject keystrokes into (TIOCSTI,
/// CVE-2017-5226).
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_cannot_reach_the_servers_terminal() {
    // The server runs on a real terminal of its own.
    let (mut master, mut slave) = (0, 0);
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0);
    // Identify the terminal by inode: a sandbox has its own /dev/pts, whose
    // paths can look like ours.
    let tty = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(format!("/proc/self/fd/{slave}")).unwrap();
        (m.dev(), m.ino())
    };
    let server = TestServer::start_with_stderr(&[], unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave)
    });
    server.create("typist", "python").await;
    let started = server.start_project("typist").await;
    let mut client = server.ide_client("typist", &started).await;
    let term = open_terminal(&client).await;
    let out = run(
        &mut client,
        term,
        "python3 -c 'import fcntl, termios, os\nfor fd in range(3, 64):\n    try: fcntl.ioctl(fd, termios.TIOCSTI, b\"X\"); print(\"INJ\" + \"ECTED\", fd)\n    except OSError: pass' 2>&1 | tail -3",
    )
    .await;
    assert!(!out.contains("INJECTED"), "{out}");

    let sandboxed: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.starts_with(b"/opt/cloudcode/cloudcode-runner") && c.windows(6).any(|w| w == b"typist"))
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(sandboxed.len(), 1);
    let runner = sandboxed[0];
    let stat = std::fs::read_to_string(format!("/proc/{runner}/stat")).unwrap();
    let tty_nr: i64 = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(4)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(tty_nr, 0, "the runner has a controlling terminal");
    for fd in std::fs::read_dir(format!("/proc/{runner}/fd")).unwrap().flatten() {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata(fd.path()) else { continue };
        assert_ne!(
            (m.dev(), m.ino()),
            tty,
            "the runner holds the server's terminal as fd {:?}",
            fd.file_name()
        );
    }
    unsafe {
        libc::close(master);
    }
}

/// `--sandbox-network outbound` gives the sandbox an interface out (for npm
/// and pip) while the host's loopback, and so the control plane, stays out
/// of reach. (Reaching the internet itself cannot be tested here: this
/// machine has none.)
#[tokio::test(flavor = "multi_thread")]
async fn outbound_network_still_keeps_the_host_loopback_out() {
    let server = TestServer::start(&["--sandbox-network", "outbound"]);
    server.create("online", "python").await;
    let started = server.start_project("online").await;
    let mut client = server.ide_client("online", &started).await;
    let term = open_terminal(&client).await;
    let mut interfaces = String::new();
    for _ in 0..50 {
        interfaces = run(&mut client, term, "cat /proc/net/dev").await;
        if interfaces.contains("tap0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(interfaces.contains("tap0"), "no outbound interface: {interfaces}");
    let out = run(&mut client, term, "cat /etc/resolv.conf").await;
    assert!(out.contains("nameserver 10.0.2.3"), "{out}");
    for host in ["127.0.0.1", "10.0.2.2"] {
        let probe = format!(
            "(exec 3<>/dev/tcp/{host}/{}) 2>/dev/null && echo REACHED-SERVER || echo NO-SERVER",
            server.port
        );
        let out = run(&mut client, term, &probe).await;
        assert!(
            out.contains("NO-SERVER\r\n") && !out.contains("REACHED-SERVER\r\n"),
            "{host}: {out}"
        );
    }
}

/// Hot reload needs WebSocket upgrades on the preview origin: an app in the
/// sandbox that switches protocols and echoes gets its bytes through the
/// gateway both ways.
#[tokio::test(flavor = "multi_thread")]
async fn preview_upgrades_reach_the_app_and_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[]);
    server.create("hot", "python").await;
    let started = server.start_project("hot").await;
    let mut client = server.ide_client("hot", &started).await;
    let app = "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', 3000))\ns.listen()\nwhile True:\n    c, _ = s.accept()\n    head = b''\n    while b'\\r\\n\\r\\n' not in head:\n        head += c.recv(1024)\n    c.sendall(b'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: echo\\r\\nConnection: Upgrade\\r\\n\\r\\n')\n    while True:\n        data = c.recv(1024)\n        if not data:\n            break\n        c.sendall(data.upper())\n    c.close()\n";
    client
        .write_file(&WorkspacePath::parse("upgrade.py").unwrap(), app.as_bytes(), None)
        .await
        .unwrap();
    let term = open_terminal(&client).await;
    run(&mut client, term, "python3 upgrade.py > /tmp/up.log 2>&1 & disown").await;

    let mut reply = Vec::new();
    for _ in 0..100 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let request = format!(
            "GET /reload HTTP/1.1\r\nHost: hot.preview.localhost:{}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            server.port
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 512];
        let n = stream.read(&mut head).await.unwrap_or(0);
        if !String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101") {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        stream.write_all(b"reload please").await.unwrap();
        reply = vec![0u8; 13];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        break;
    }
    assert_eq!(reply, b"RELOAD PLEASE");
}

/// Storage unusable when a project starts: the start fails with the reason,
/// at once, and the project does not look running.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_while_storage_is_broken_is_reported() {
    let server = TestServer::start(&[]);
    server.create("brittle", "python").await;
    let code = server.data.join("storage/code/brittle");
    std::fs::remove_dir_all(&code).unwrap();
    std::fs::write(&code, "not a directory").unwrap();
    let started = std::time::Instant::now();
    let (status, body) = server.api("POST", "/api/projects/brittle/start", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "start_failed");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the failure took {:?}",
        started.elapsed()
    );
    let (_, body) = server.api("GET", "/api/projects/brittle/status", None).await;
    assert_ne!(body["state"], "running");
}

/// A deleted project leaves nothing behind that a new project of the same
/// name would inherit.
#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_project_starts_clean() {
    let server = TestServer::start(&[]);
    server.create("reborn", "python").await;
    let started = server.start_project("reborn").await;
    let mut client = server.ide_client("reborn", &started).await;
    let term = open_terminal(&client).await;
    run(&mut client, term, "echo old life > old.txt").await;
    client.close();
    let (status, _) = server.api("DELETE", "/api/projects/reborn", None).await;
    assert_eq!(status, 204);
    server.create("reborn", "python").await;
    let started = server.start_project("reborn").await;
    let client = server.ide_client("reborn", &started).await;
    let missing = client.read_file(&WorkspacePath::parse("old.txt").unwrap()).await;
    assert!(missing.is_err(), "the deleted project's file came back");
    assert!(!server.data.join("storage/code/reborn/old.txt").exists());
}

/// With S3 storage the sandbox still gets a local directory (its runner
/// never holds S3 credentials); the server mirrors it. Templates, saves and
/// terminal-made files reach the bucket, and a fresh machine's start
/// restores from it.
#[tokio::test(flavor = "multi_thread")]
async fn s3_storage_is_mirrored_and_restored() {
    use cloudcode_proto::storage::s3::S3Store;
    use cloudcode_proto::storage::{ObjectKey, ObjectStore};
    let s3 = cloudcode_proto::testing::S3Server::start();
    let endpoint = s3.endpoint();
    let args = s3_args(&endpoint);
    let server = TestServer::start(&args);
    let bucket = S3Store::connect(s3.config("projects")).await.unwrap();
    let get = |k: &str| {
        let bucket = bucket.clone();
        let k = ObjectKey::parse(k).unwrap();
        async move { bucket.get(&k).await.ok().map(|b| b.to_vec()) }
    };
    server.create("cloudy", "python").await;
    assert!(
        get("code/cloudy/main.py").await.is_some(),
        "the template was not copied in S3"
    );

    let started = server.start_project("cloudy").await;
    let mut client = server.ide_client("cloudy", &started).await;
    client
        .write_file(&WorkspacePath::parse("saved.txt").unwrap(), b"saved", None)
        .await
        .unwrap();
    let term = open_terminal(&client).await;
    run(&mut client, term, "echo from-shell > shell.txt").await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while get("code/cloudy/shell.txt").await.as_deref() != Some(&b"from-shell\n"[..]) {
        assert!(
            std::time::Instant::now() < deadline,
            "terminal-made file never reached S3"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(get("code/cloudy/saved.txt").await.as_deref(), Some(&b"saved"[..]));
    // Nothing in the sandbox knows the S3 credentials.
    let env = run(
        &mut client,
        term,
        "env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'",
    )
    .await;
    assert!(
        !env.contains(cloudcode_proto::testing::SECRET_KEY),
        "S3 secret inside the sandbox"
    );

    // Stop, wipe this machine's copies, start: everything comes from S3.
    let (status, _) = server.api("POST", "/api/projects/cloudy/stop", None).await;
    assert_eq!(status, 200);
    std::fs::remove_dir_all(server.data.join("storage/code/cloudy")).unwrap();
    std::fs::remove_dir_all(server.data.join("sandboxes/cloudy/workspace")).unwrap();
    let started = server.start_project("cloudy").await;
    let client = server.ide_client("cloudy", &started).await;
    assert_eq!(
        client
            .read_file(&WorkspacePath::parse("shell.txt").unwrap())
            .await
            .unwrap()
            .0,
        b"from-shell\n"
    );
    let (template, _) = client
        .read_file(&WorkspacePath::parse("main.py").unwrap())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&template).contains("Hello from cloudcode"));
}

/// Defence in depth: the sandbox's user is not root on the host (its
/// processes' host uid, seen from the host's /proc, is not 0), it cannot
/// make new user namespaces, and outside its workspace, its storage
/// directory and /tmp its root is read-only.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_user_is_unprivileged_on_the_host_and_cannot_nest_namespaces() {
    let server = TestServer::start(&[]);
    server.create("jailed", "python").await;
    let started = server.start_project("jailed").await;
    let mut client = server.ide_client("jailed", &started).await;
    let term = open_terminal(&client).await;

    let out = run(
        &mut client,
        term,
        "unshare -U true 2>&1; echo userns=$?; python3 -c 'import os; os.unshare(os.CLONE_NEWUSER); print(\"NESTED\")' 2>&1 | tail -1",
    )
    .await;
    assert!(!out.contains("userns=0\r\n"), "a nested user namespace: {out}");
    assert!(out.contains("userns=1\r\n"), "{out}");
    assert!(!out.contains("NESTED\r\n"), "a nested user namespace: {out}");

    run(&mut client, term, "sleep 4343 & disown").await;
    let find = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x004343\x00"))
    };
    eventually("the sandbox's sleep, seen from the host", || find().is_some()).await;
    let sleeper = find().unwrap();
    let status = std::fs::read_to_string(sleeper.path().join("status")).unwrap();
    for line in status
        .lines()
        .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
    {
        let ids: Vec<u32> = line.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
        assert!(ids.iter().all(|id| *id != 0), "host root in the sandbox: {line}");
    }
    let workspace = server.data.join("sandboxes/jailed/workspace");
    use std::os::unix::fs::MetadataExt;
    assert_ne!(std::fs::metadata(&workspace).unwrap().uid(), 0);

    let out = run(
        &mut client,
        term,
        "for d in / /etc /run /usr /opt; do touch $d/probe 2>/dev/null && echo WRITTEN-\"$d\"; done; touch /tmp/p /workspace/p /storage/code/jailed/p && echo WRITABLE-OK",
    )
    .await;
    assert!(!out.contains("WRITTEN-/"), "{out}");
    assert!(out.contains("WRITABLE-OK\r\n"), "{out}");
}
