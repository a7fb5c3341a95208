//! Sandboxes outlive the control plane, as pods do: a server stopped
//! (SIGTERM) or killed (SIGKILL) leaves its users' shells and apps running,
//! and the next server adopts them; a stop still ends everything, and what
//! died or is not what its record says is cleaned up, never adopted.

use std::time::{Duration, Instant};

use cloudcode_proto::client::{Incoming, RunnerClient};
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{Event, Op, Reply, TermId};
use cloudcode_proto::path::WorkspacePath;
use serde_json::Value;

use crate::common::*;

/// A runner client through the gateway, and the runner instance its
/// welcome names.
async fn connect(server: &TestServer, id: &str, started: &Value) -> (RunnerClient, String) {
    let mut client = RunnerClient::connect_with_host(
        &format!("ws://127.0.0.1:{}/v1/ws", server.port),
        Some(&format!("{id}.ide.localhost:{}", server.port)),
        started["token"].as_str().unwrap(),
    )
    .await
    .expect("connecting through the gateway");
    match next(&mut client).await {
        Incoming::Event(Event::Welcome { instance, .. }) => (client, instance),
        other => panic!("{other:?}"),
    }
}

fn record(server: &TestServer, id: &str) -> Option<Value> {
    let text = std::fs::read(server.data.join(format!("sandboxes/{id}/sandbox.json"))).ok()?;
    Some(serde_json::from_slice(&text).unwrap())
}

fn pid_of(record: &Value, which: &str) -> i32 {
    record[which]["pid"].as_i64().unwrap() as i32
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// A process's start time, in clock ticks since boot (`/proc/PID/stat`'s
/// field 22), as the server records it.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, after_name) = stat.rsplit_once(") ").unwrap();
    // Field 3 (the state) comes first after the name.
    after_name.split(' ').nth(19).unwrap().parse().unwrap()
}

fn cgroup_dirs(record: &Value) -> Vec<std::path::PathBuf> {
    record["cgroup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().into())
        .collect()
}

/// Reads `term`'s output until `done` says enough; returns the bytes and
/// the seq after them. Output must start exactly at `from` (no snapshot).
async fn read_until(client: &mut RunnerClient, term: TermId, from: u64, done: impl Fn(&str) -> bool) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let mut next_seq = from;
    while !done(&String::from_utf8_lossy(&out)) {
        match next(client).await {
            Incoming::Frame(Frame::TermOutput { term: t, seq, data }) if t == term => {
                assert_eq!(seq, next_seq, "output resumed with a gap or an overlap");
                next_seq = seq + data.len() as u64;
                out.extend_from_slice(&data);
            }
            Incoming::Frame(Frame::TermSnapshot { term: t, .. }) if t == term => {
                panic!("a snapshot instead of the output since the resumed seq")
            }
            _ => {}
        }
    }
    (out, next_seq)
}

/// The counter's values, in the order printed.
fn counted(out: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(out)
        .split("\r\n")
        // What the line ends as on the screen: after a carriage return in
        // it (bash ends bracketed paste with `ESC[?2004l` and `\r`).
        .filter_map(|line| line.rsplit('\r').next()?.strip_prefix("n")?.parse().ok())
        .collect()
}

async fn preview_answers(server: &TestServer, id: &str) -> String {
    let host = format!("{id}.preview.localhost:{}", server.port);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = raw_request(server.port, "GET", "/hello", Some(&host), None, None).await;
        if status == 200 {
            return body.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the app never answered the preview: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A counter in a terminal and an app on port 3000 keep running while the
/// server is replaced (`signal`: how the old one ends); a client resumes
/// the terminal from its seq with every value in order, the app answers
/// the preview, and a stop then ends everything.
async fn a_terminal_and_an_app_outlive_the_server(id: &str, signal: libc::c_int) {
    let mut server = TestServer::binary(&[]);
    server.create(id, "python").await;
    let started = server.start_project(id).await;
    let (mut client, instance) = connect(&server, id, &started).await;
    let app = open_terminal(&client).await;
    run(&mut client, app, "python3 main.py > /tmp/app.log 2>&1 & disown").await;
    assert!(preview_answers(&server, id).await.contains("Hello from cloudcode"));
    let counter = open_terminal(&client).await;
    client
        .send_input(counter, b"i=0; while :; do echo n$i; i=$((i+1)); sleep 0.1; done\r")
        .unwrap();
    let (before, resume_at) = read_until(&mut client, counter, 0, |out| counted(out.as_bytes()).len() >= 5).await;
    let last_before = *counted(&before).last().unwrap();
    let sandbox = record(&server, id).expect("a running sandbox has a record");
    let (bwrap, runner) = (pid_of(&sandbox, "sandbox"), pid_of(&sandbox, "runner"));
    client.close();

    match signal {
        libc::SIGKILL => server.kill(),
        _ => server.terminate(),
    }
    assert!(alive(bwrap) && alive(runner), "the sandbox ended with the server");

    let again = TestServer::restart(&server);
    // Taken over in the background, without anyone asking.
    wait_for_state(&again, id, "running").await;
    let started = again.start_project(id).await;
    let (mut client, instance_again) = connect(&again, id, &started).await;
    assert_eq!(instance_again, instance, "a new runner, not the adopted one");
    assert_eq!(
        record(&again, id).unwrap(),
        sandbox,
        "the record changed: not the same sandbox"
    );
    match client
        .request(Op::TermAttach {
            term: counter,
            from_seq: resume_at,
            flow_window: None,
        })
        .await
        .unwrap()
    {
        Reply::TermAttached { term, .. } => assert_eq!(term, counter),
        other => panic!("{other:?}"),
    }
    // Values printed while no server ran come first, then the counter goes on.
    let (after, _) = read_until(&mut client, counter, resume_at, |out| {
        counted(out.as_bytes()).last().is_some_and(|n| *n >= last_before + 10)
    })
    .await;
    let all = counted(&[before, after].concat());
    assert!(
        all.iter().enumerate().all(|(i, n)| *n == i as u64),
        "the counter's values are not consecutive: {all:?}"
    );
    assert!(preview_answers(&again, id).await.contains("Hello from cloudcode"));

    // Idle reaping, status and stop treat it as their own: a stop ends the
    // runner, the app, the counter, the cgroup and the record.
    let (status, body) = again.api("POST", &format!("/api/projects/{id}/stop"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!alive(bwrap) && !alive(runner), "the stopped sandbox still runs");
    eventually("no process of the stopped sandbox", || runners_of(id).is_empty()).await;
    for dir in cgroup_dirs(&sandbox) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(record(&again, id).is_none(), "the stopped sandbox's record left behind");
    let (_, body) = again.api("GET", &format!("/api/projects/{id}/status"), None).await;
    assert_eq!(body["state"], "stopped");
}

/// Idle stopping resumes for what the next server took over: an adopted
/// sandbox nobody uses is stopped (its files flushed) after the new
/// server's idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn an_adopted_sandbox_nobody_uses_is_stopped_when_idle() {
    let id = "idle-adopted";
    let mut server = TestServer::binary(&[]);
    server.create(id, "python").await;
    server.start_project(id).await;
    let runner = pid_of(&record(&server, id).unwrap(), "runner");
    server.kill();

    let again = TestServer::restart_with(&server, &["--idle-timeout-secs", "1"]);
    wait_for_state(&again, id, "stopped").await;
    eventually("the idle runner ended", || !alive(runner)).await;
    assert!(record(&again, id).is_none(), "its record left behind");
}

/// A sandbox whose stop was under way when its server died (no longer
/// wanted) is stopped by the next server once it has taken it over, not
/// left running.
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_being_stopped_when_its_server_died_is_stopped_by_the_next() {
    let id = "half-stopped";
    let mut server = TestServer::binary(&[]);
    server.create(id, "python").await;
    server.start_project(id).await;
    let runner = pid_of(&record(&server, id).unwrap(), "runner");
    server.kill();
    let wanted = server.data.join("sandboxes/wanted.list");
    let list = std::fs::read_to_string(&wanted).unwrap();
    assert!(list.lines().any(|l| l == id), "{list}");
    let others: String = list.lines().filter(|l| *l != id).map(|l| format!("{l}\n")).collect();
    std::fs::write(&wanted, others).unwrap();

    let again = TestServer::restart(&server);
    wait_for_state(&again, id, "stopped").await;
    eventually("the unwanted sandbox's runner ended", || !alive(runner)).await;
    assert!(record(&again, id).is_none(), "its record left behind");
}

/// A sandbox slow to answer (its runner stopped, here) does not keep the
/// next server from serving: the API answers at once and says the project
/// is starting; once the runner answers, the same sandbox is adopted, under
/// the new server's limits.
#[tokio::test(flavor = "multi_thread")]
async fn the_next_server_serves_while_a_slow_sandbox_is_being_adopted() {
    let id = "slow-adopt";
    let mut server = TestServer::binary(&[]);
    server.create(id, "python").await;
    let started = server.start_project(id).await;
    let (_, instance) = connect(&server, id, &started).await;
    let sandbox = record(&server, id).unwrap();
    let runner = pid_of(&sandbox, "runner");
    server.kill();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(runner, libc::SIGSTOP);
    }

    let again = TestServer::restart_with(&server, &["--sandbox-pids", "77"]);
    let (code, list) = again.api("GET", "/api/projects", None).await;
    assert_eq!(code, 200, "{list}");
    let (_, status) = again.api("GET", &format!("/api/projects/{id}/status"), None).await;
    assert_eq!(status["state"], "starting", "{status}");
    // SAFETY: as above.
    unsafe {
        libc::kill(runner, libc::SIGCONT);
    }
    let started = again.start_project(id).await;
    let (_, instance_again) = connect(&again, id, &started).await;
    assert_eq!(instance_again, instance, "a new runner, not the adopted one");
    assert_eq!(record(&again, id).unwrap(), sandbox, "not the same sandbox");
    let caps: Vec<String> = cgroup_dirs(&sandbox)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("pids.max")).ok())
        .map(|cap| cap.trim().to_string())
        .collect();
    assert_eq!(
        caps,
        ["77"],
        "the new server's process cap is not the adopted sandbox's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_and_an_app_keep_running_across_a_sigterm_restart() {
    a_terminal_and_an_app_outlive_the_server("keep-term", libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_and_an_app_keep_running_across_a_sigkill_restart() {
    a_terminal_and_an_app_outlive_the_server("keep-kill", libc::SIGKILL).await;
}

/// A runner killed while no server ran: its sandbox is cleaned up when the
/// next server starts, the project starts afresh (it was running, so it is
/// resumed) with every file, and nothing of the old sandbox is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_whose_runner_died_while_the_server_was_down_is_cleaned_up_and_starts_again() {
    let id = "fell-down";
    let mut server = TestServer::binary(&[]);
    server.create(id, "python").await;
    let started = server.start_project(id).await;
    let (client, _) = connect(&server, id, &started).await;
    client
        .write_file(&WorkspacePath::parse("kept.txt").unwrap(), b"kept", None)
        .await
        .unwrap();
    let old = record(&server, id).unwrap();
    server.kill();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid_of(&old, "runner"), libc::SIGKILL);
    }
    eventually("the runnerless sandbox ended", || !alive(pid_of(&old, "sandbox"))).await;

    let again = TestServer::restart(&server);
    let deadline = Instant::now() + PATIENCE;
    let new = loop {
        if let Some(new) = record(&again, id)
            && new != old
            && new["runner"].is_object()
        {
            break new;
        }
        assert!(Instant::now() < deadline, "the project was not started afresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(pid_of(&new, "sandbox"), pid_of(&old, "sandbox"));
    let started = again.start_project(id).await;
    let (client, _) = connect(&again, id, &started).await;
    let (data, _) = client
        .read_file(&WorkspacePath::parse("kept.txt").unwrap())
        .await
        .unwrap();
    assert_eq!(data, b"kept");
    assert_eq!(runners_of(id).len(), 1, "the old sandbox left a runner behind");
}

/// A record whose pids now name other processes (a reboot, or pids reused
/// while no server ran): the start time tells them apart, so nothing is
/// adopted and the process that has the pid now is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_whose_pid_was_reused_is_not_adopted_and_that_process_is_left_alone() {
    let id = "reused-pid";
    let mut server = TestServer::binary(&[]);
    server.create(id, "python").await;
    server.start_project(id).await;
    let mut old = record(&server, id).unwrap();
    server.kill();
    // The sandbox ends while no server runs...
    for dir in cgroup_dirs(&old) {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid.parse().unwrap(), libc::SIGKILL);
            }
        }
    }
    eventually("the sandbox ended", || !alive(pid_of(&old, "sandbox"))).await;
    // ...and its pid now belongs to someone else's process: forged here as
    // a record naming a live process with another start time. Earlier than
    // its own, as a reused pid's record is: the recorded start plus one
    // could be the stranger's very start (ticks are 10 ms, and it starts
    // moments after the sandbox did), and then it would rightly be ended.
    let mut stranger = std::process::Command::new("sleep").arg("6363").spawn().unwrap();
    let started = start_time(stranger.id());
    for which in ["sandbox", "runner"] {
        old[which]["pid"] = stranger.id().into();
        old[which]["start"] = (started - 1).into();
    }
    std::fs::write(
        server.data.join(format!("sandboxes/{id}/sandbox.json")),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();

    let again = TestServer::restart(&server);
    // Not adopted: the project (wanted) is started afresh.
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(new) = record(&again, id)
            && pid_of(&new, "sandbox") != stranger.id() as i32
            && new["runner"].is_object()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the project was not started afresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        matches!(stranger.try_wait(), Ok(None)),
        "a process that merely has a recorded pid was killed"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
}

/// `--stop-sandboxes` is how a machine is left without sandboxes: every
/// runner flushes and ends, nothing of them is left, and it is refused
/// while a server runs on the data directory.
#[tokio::test(flavor = "multi_thread")]
async fn stop_sandboxes_ends_every_sandbox_and_is_refused_while_a_server_runs() {
    let id = "stop-all";
    let mut server = TestServer::binary(&[]);
    server.create(id, "python").await;
    let started = server.start_project(id).await;
    let (mut client, _) = connect(&server, id, &started).await;
    let term = open_terminal(&client).await;
    run(
        &mut client,
        term,
        "echo unsaved-until-stop > typed.txt; sleep 5858 & disown",
    )
    .await;
    let sandbox = record(&server, id).unwrap();

    let refused = server.stop_sandboxes();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("another cloudcode-server is using"), "{said}");
    assert!(alive(pid_of(&sandbox, "runner")));

    server.terminate();
    let stopped = server.stop_sandboxes();
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    assert_eq!(String::from_utf8_lossy(&stopped.stdout).trim(), "sandboxes stopped: 1");
    assert!(runners_of(id).is_empty() && !process_running("5858"));
    for dir in cgroup_dirs(&sandbox) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(record(&server, id).is_none());
    assert_eq!(
        std::fs::read(server.data.join(format!("storage/code/{id}/typed.txt"))).unwrap(),
        b"unsaved-until-stop\n"
    );
}

/// With S3 storage the server mirrors each sandbox's local storage: an
/// adopted sandbox gets its mirror back, and what its runner stored (or
/// deleted) while no server ran reaches S3.
#[tokio::test(flavor = "multi_thread")]
async fn an_adopted_sandbox_gets_its_s3_mirror_back() {
    use cloudcode_proto::storage::s3::S3Store;
    use cloudcode_proto::storage::{ObjectKey, ObjectStore};
    let id = "mirrored";
    let s3 = cloudcode_proto::testing::S3Server::start();
    let endpoint = s3.endpoint();
    let mut server = TestServer::binary(&s3_args(&endpoint));
    let bucket = S3Store::connect(s3.config("projects")).await.unwrap();
    let key = ObjectKey::parse(&format!("code/{id}/away.txt")).unwrap();
    let doomed = ObjectKey::parse(&format!("code/{id}/doomed.txt")).unwrap();
    server.create(id, "python").await;
    let started = server.start_project(id).await;
    let (client, _) = connect(&server, id, &started).await;
    client
        .write_file(
            &WorkspacePath::parse("doomed.txt").unwrap(),
            b"deleted while away",
            None,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while bucket.get(&doomed).await.is_err() {
        assert!(Instant::now() < deadline, "the file never reached S3");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.close();
    let runner = pid_of(&record(&server, id).unwrap(), "runner");
    server.kill();

    // The sandbox's own work while no server runs: its runner stores it
    // locally, and no mirror is there to upload it (or the deletion).
    let workspace = server.data.join(format!("sandboxes/{id}/workspace"));
    std::fs::write(workspace.join("away.txt"), "while away\n").unwrap();
    std::fs::remove_file(workspace.join("doomed.txt")).unwrap();
    let stored = server.data.join(format!("storage/code/{id}"));
    eventually("the runner stored the change and the deletion", || {
        stored.join("away.txt").exists() && !stored.join("doomed.txt").exists()
    })
    .await;
    assert!(bucket.get(&key).await.is_err(), "uploaded with no server running");

    let again = TestServer::restart(&server);
    assert_eq!(pid_of(&record(&again, id).unwrap(), "runner"), runner, "not adopted");
    let deadline = Instant::now() + PATIENCE;
    while bucket.get(&key).await.ok().as_deref() != Some(&b"while away\n"[..]) {
        assert!(Instant::now() < deadline, "the adopted sandbox's mirror never uploaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + PATIENCE;
    while bucket.get(&doomed).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "a file deleted while no server ran is still in S3 (a fresh start would bring it back)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it goes on mirroring.
    let started = again.start_project(id).await;
    let (client, _) = connect(&again, id, &started).await;
    client
        .write_file(&WorkspacePath::parse("later.txt").unwrap(), b"later", None)
        .await
        .unwrap();
    let later = ObjectKey::parse(&format!("code/{id}/later.txt")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while bucket.get(&later).await.ok().as_deref() != Some(&b"later"[..]) {
        assert!(Instant::now() < deadline, "the resumed mirror stopped uploading");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A machine rebooted (the sandbox gone) and its local storage wiped, as
/// an operator may take it for a cache of S3: the next server ends what is
/// left of the sandbox and deletes nothing from S3; the project starts
/// again from the bucket with its files.
#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_local_copy_never_deletes_the_project_from_s3() {
    use cloudcode_proto::storage::s3::S3Store;
    use cloudcode_proto::storage::{ObjectKey, ObjectStore};
    let id = "wiped";
    let s3 = cloudcode_proto::testing::S3Server::start();
    let endpoint = s3.endpoint();
    let mut server = TestServer::binary(&s3_args(&endpoint));
    let bucket = S3Store::connect(s3.config("projects")).await.unwrap();
    let key = ObjectKey::parse(&format!("code/{id}/kept.txt")).unwrap();
    server.create(id, "python").await;
    let started = server.start_project(id).await;
    let (client, _) = connect(&server, id, &started).await;
    client
        .write_file(&WorkspacePath::parse("kept.txt").unwrap(), b"in the bucket", None)
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while bucket.get(&key).await.is_err() {
        assert!(Instant::now() < deadline, "the file never reached S3");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.close();
    let sandbox = record(&server, id).unwrap();
    server.kill();
    // The reboot: the sandbox ends without its server, and the local copy
    // of storage is gone.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid_of(&sandbox, "runner"), libc::SIGKILL) };
    let bwrap = pid_of(&sandbox, "sandbox");
    eventually("the sandbox gone", || !alive(bwrap)).await;
    std::fs::remove_dir_all(server.data.join("storage")).unwrap();

    let again = TestServer::restart(&server);
    let started = again.start_project(id).await;
    assert_eq!(
        bucket.get(&key).await.ok().as_deref(),
        Some(&b"in the bucket"[..]),
        "the project was deleted from S3"
    );
    let (mut client, _) = connect(&again, id, &started).await;
    let term = open_terminal(&client).await;
    let out = run(&mut client, term, "cat kept.txt").await;
    assert!(out.contains("in the bucket"), "{out}");
}

/// With outbound network, the sandbox's slirp4netns is taken over too:
/// the adopted sandbox still reaches out, and a stop ends the helper.
#[tokio::test(flavor = "multi_thread")]
async fn an_adopted_sandbox_keeps_its_network_helper_and_a_stop_ends_it() {
    let id = "net-keeper";
    let mut server = TestServer::binary(&["--sandbox-network", "outbound"]);
    server.create(id, "python").await;
    server.start_project(id).await;
    let sandbox = record(&server, id).unwrap();
    assert!(sandbox["network"].is_object(), "no network helper recorded: {sandbox}");
    let slirp = pid_of(&sandbox, "network");
    server.terminate();
    assert!(alive(slirp), "the network helper ended with the server");

    let again = TestServer::restart(&server);
    let started = again.start_project(id).await;
    let (mut client, _) = connect(&again, id, &started).await;
    assert_eq!(record(&again, id).unwrap(), sandbox, "not adopted");
    let term = open_terminal(&client).await;
    // slirp4netns's own DNS forwarder answers only through the helper.
    let out = run(
        &mut client,
        term,
        "python3 -c 'import socket; s = socket.create_connection((\"10.0.2.3\", 53), 5); print(\"reached\", s.close())' 2>&1 | tail -1",
    )
    .await;
    assert!(out.contains("reached None"), "{out}");
    let (status, body) = again.api("POST", &format!("/api/projects/{id}/stop"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!alive(slirp), "the stopped sandbox's network helper still runs");
}
