//! Hearth across hosts: one Linux network namespace per host (a coordinator and four participants), each
//! with a veth link to a bridge in a namespace of its own, private addresses that exist only inside those
//! namespaces, and host names (`coordinator.hearth.test`, ...) resolved through each namespace's own
//! /etc/hosts, the coordinator's certificate naming its host. Every node is a separate process in its
//! host's namespace; the operator's commands run in the coordinator's.
//!
//! A securely aggregated intent job runs there to completion; mid-job one participant's link is cut (`ip
//! link set ... down`), and the open round commits with the three survivors (secure aggregation among
//! four tolerates one drop-out). Then, the link back up, the coordinator is killed (SIGKILL) in the middle
//! of a second secure job, with a round open, and restarted on its host: the job resumes and finishes
//! without any round committed twice.
//!
//! Network namespaces need root (CI runs as root): run as another user, the test fails saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PARTICIPANTS: [&str; 4] = ["p1", "p2", "p3", "p4"];
const ROUNDS: u64 = 6;
/// The first job's features.
const NGRAMS: &str = "word_ngrams = 2\nchar_ngram_min = 3\nchar_ngram_max = 5";
/// The restarted job's: a few times as many features a text, so that a round trains for longer.
const MORE_NGRAMS: &str = "word_ngrams = 3\nchar_ngram_min = 1\nchar_ngram_max = 8";

/// The namespaces, links and /etc/netns files of one run; removed on drop, with the processes in them.
struct Net {
    prefix: String,
    subnet: String,
    hosts: Vec<String>,
    children: Vec<(String, Child)>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Net {
    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn addr(&self, host: &str) -> String {
        let i = self.hosts.iter().position(|h| h == host).unwrap();
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// The host-side end of `host`'s link (inside its namespace).
    fn link(&self, host: &str) -> String {
        let i = self.hosts.iter().position(|h| h == host).unwrap();
        format!("{}h{i}", self.prefix)
    }

    /// The bridge-side end of `host`'s link (interface names have at most 15 bytes).
    fn port(&self, host: &str) -> String {
        let i = self.hosts.iter().position(|h| h == host).unwrap();
        format!("{}s{i}", self.prefix)
    }

    fn up(hosts: &[&str]) -> Net {
        let pid = std::process::id();
        let net = Net {
            prefix: format!("h{}", pid % 100_000),
            subnet: format!("10.{}.{}", 100 + pid % 100, pid % 250),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            children: Vec::new(),
        };
        let switch = net.ns("sw");
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        let mut etc_hosts = String::from("127.0.0.1 localhost\n");
        for h in hosts {
            etc_hosts += &format!("{} {h}.hearth.test\n", net.addr(h));
        }
        for h in hosts {
            let ns = net.ns(h);
            let (inside, outside) = (net.link(h), net.port(h));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &inside, "type", "veth", "peer", "name", &outside]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["link", "set", &outside, "netns", &switch]);
            ip(&["-n", &switch, "link", "set", &outside, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &outside, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.addr(h)), "dev", &inside]);
            ip(&["-n", &ns, "link", "set", &inside, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            // `ip netns exec` mounts /etc/netns/NS/hosts over /etc/hosts for what it runs.
            let etc = PathBuf::from("/etc/netns").join(&ns);
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(etc.join("hosts"), &etc_hosts).unwrap();
        }
        net
    }

    /// `hearth ARGS` on `host`, in its namespace.
    fn hearth_on(&self, host: &str) -> Command {
        let plain = hearth();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host), HEARTH]);
        for (k, v) in plain.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd
    }

    fn spawn(&mut self, host: &str, mut cmd: Command, log_to: &Path) {
        let child = cmd.stdout(Stdio::null()).stderr(log(log_to)).spawn().unwrap();
        self.children.push((host.to_string(), child));
    }

    /// Sends `signal` (`STOP`, `CONT`) to `host`'s processes (`ip netns exec` execs them: same pid).
    fn signal(&self, host: &str, signal: &str) {
        for (_, c) in self.children.iter().filter(|(h, _)| h == host) {
            let out =
                Command::new("kill").args([&format!("-{signal}"), &c.id().to_string()]).output().unwrap();
            assert!(out.status.success(), "kill -{signal} {host}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    fn kill(&mut self, host: &str) {
        for (_, c) in self.children.iter_mut().filter(|(h, _)| h == host) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.retain(|(h, _)| h != host);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in self.hosts.clone().iter().map(String::as_str).chain(["sw"]) {
            let ns = self.ns(h);
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns));
        }
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The rounds of `job` the coordinator's audit log records as committed, in order, with each entry's detail.
fn commits(state: &Path, job: &str) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(state.join("audit/entries.jsonl")).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("\"round.commit\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["entry"].clone())
        .filter(|e| e["outcome"] == "ok")
        .filter(|e| e["detail"].as_str().is_some_and(|d| d.starts_with(&format!("job {job} round "))))
        .map(|e| {
            // "job across-hosts round 3: securely aggregated sum of 3 updates from [...], N examples"
            let detail = e["detail"].as_str().unwrap_or_default().to_string();
            let round = detail
                .split("round ")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            (round, detail)
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} did not happen in {limit:?}:\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_consortium_across_hosts_survives_a_cut_link_and_a_coordinator_restart() {
    assert!(
        is_root(),
        "this test makes network namespaces, which needs root: run ./scripts/test.sh as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hosts: Vec<&str> = ["coordinator"].into_iter().chain(PARTICIPANTS).collect();
    let mut net = Net::up(&hosts);

    // The PKI: the coordinator's certificate names its host.
    let pki = d.join("pki");
    hearth_ok(&[
        "pki",
        "init",
        "--dir",
        s(&pki),
        "--participants",
        &PARTICIPANTS.join(","),
        "--dns",
        "coordinator.hearth.test",
    ]);
    // Each institution's data, imported on its host before its participant starts.
    // Enough examples that local training (1000 epochs, batch 1) outlasts the moment the test takes to
    // kill the coordinator once a round opens.
    let (train, _) = clinc_slice(16);
    let labels = labels_of(&train);
    for (i, p) in PARTICIPANTS.iter().enumerate() {
        let shard: Vec<_> = train.iter().skip(i).step_by(PARTICIPANTS.len()).cloned().collect();
        let csv = d.join(format!("{p}.csv"));
        write_csv(&csv, &shard);
        hearth_ok(&["data", "import", "--data-dir", s(&d.join("data").join(p)), s(&csv)]);
    }

    let coordinator_listen = format!("{}:7700", net.addr("coordinator"));
    let state = d.join("coordinator");
    let start_coordinator = |net: &mut Net| {
        let ready = d.join("coordinator.addr");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = net.hearth_on("coordinator");
        cmd.args(["coordinator", "--ready-file", s(&ready)])
            .env("HEARTH_COORDINATOR__LISTEN", &coordinator_listen)
            .env("HEARTH_COORDINATOR__STATE_DIR", &state)
            .env("HEARTH_COORDINATOR__TLS__CA", pki.join("ca.pem"))
            .env("HEARTH_COORDINATOR__TLS__CERT", pki.join("coordinator.pem"))
            .env("HEARTH_COORDINATOR__TLS__KEY", pki.join("coordinator.key"))
            .env("HEARTH_COORDINATOR__POLICY__ALLOW_PLAIN_AGGREGATION", "true")
            .env("HEARTH_LOG", "info");
        let log_file = d.join(format!("coordinator-{}.log", net.children.len()));
        net.spawn("coordinator", cmd, &log_file);
        wait_file(&ready);
    };
    start_coordinator(&mut net);
    for p in PARTICIPANTS {
        let ready = d.join(format!("{p}.addr"));
        let mut cmd = net.hearth_on(p);
        cmd.args(["participant", "--ready-file", s(&ready)])
            .env("HEARTH_PARTICIPANT__COORDINATOR", "coordinator.hearth.test:7700")
            .env("HEARTH_PARTICIPANT__COORDINATOR_NAME", "coordinator.hearth.test")
            .env("HEARTH_PARTICIPANT__LISTEN", "127.0.0.1:0")
            .env("HEARTH_PARTICIPANT__DATA_DIR", d.join("data").join(p))
            .env("HEARTH_PARTICIPANT__TLS__CA", pki.join("ca.pem"))
            .env("HEARTH_PARTICIPANT__TLS__CERT", pki.join(format!("{p}.pem")))
            .env("HEARTH_PARTICIPANT__TLS__KEY", pki.join(format!("{p}.key")))
            .env("HEARTH_LOG", "info");
        net.spawn(p, cmd, &d.join(format!("{p}.log")));
        wait_file(&ready);
    }

    // The operator, on the coordinator's host.
    // `ngrams` ("word_ngrams = W\nchar_ngram_min = A\nchar_ngram_max = B") sets, with the 1,000 local epochs
    // (the consortium policy's most), how long each participant trains a round.
    let job_file = |id: &str, secure: bool, ngrams: &str| {
        let path = d.join(format!("{id}.toml"));
        std::fs::write(
            &path,
            format!(
                "job_id = \"{id}\"\nrounds = {ROUNDS}\nmin_participants = 3\nwait_for_participants = 4\n\
                 round_deadline_s = 90\nsecure_aggregation = {secure}\npromotion_tolerance_points = -1\n\
                 [model]\nfamily = \"intent\"\nlabels = {labels:?}\n[model.features]\ndim = 4096\n{ngrams}\n\
                 [train]\nlocal_epochs = 1000\nlearning_rate = 0.5\n\
                 batch_size = 8\nl2 = 0.0\nseed = 1\n"
            ),
        )
        .unwrap();
        path
    };
    let operator = |net: &Net, args: &[&str]| {
        let out = net
            .hearth_on("coordinator")
            .args(args)
            .args([
                "--coordinator",
                "coordinator.hearth.test:7700",
                "--coordinator-name",
                "coordinator.hearth.test",
            ])
            .args(["--tls-dir", s(&pki)])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let context = |net: &Net, job: &str| {
        let mut out = operator(net, &["job", "logs", job]).1;
        for f in files_under(d).iter().filter(|f| f.extension().is_some_and(|e| e == "log")) {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out +=
                &format!("\n--- {}\n{}", f.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        out
    };
    let finished = |net: &Net, job: &str| {
        operator(net, &["job", "list"]).1.lines().any(|l| l.starts_with(job) && l.contains("finished"))
    };

    // A securely aggregated job over the four hosts. After two rounds p4's link goes down; the open
    // round commits with the three survivors (four tolerate one drop-out), and the job finishes.
    let (ok, said) =
        operator(&net, &["job", "submit", "--spec", s(&job_file("across-hosts", true, NGRAMS)), "--detach"]);
    assert!(ok, "job submit: {said}");
    wait_until(
        "round 2 committed",
        Duration::from_secs(120),
        || commits(&state, "across-hosts").len() >= 2,
        || context(&net, "across-hosts"),
    );
    ip(&["-n", &net.ns("p4"), "link", "set", &net.link("p4"), "down"]);
    wait_until(
        "the job finished without p4",
        Duration::from_secs(240),
        || finished(&net, "across-hosts"),
        || context(&net, "across-hosts"),
    );
    let secure = commits(&state, "across-hosts");
    let rounds: Vec<u64> = secure.iter().map(|(r, _)| *r).collect();
    assert_eq!(rounds, (1..=ROUNDS).collect::<Vec<_>>(), "each round committed once: {secure:?}");
    assert!(secure[0].1.contains("securely aggregated sum of 4 updates"), "{secure:?}");
    let without: Vec<&(u64, String)> =
        secure.iter().filter(|(_, d)| d.contains("sum of 3 updates")).collect();
    assert!(!without.is_empty(), "rounds committed by the three survivors: {secure:?}");
    assert!(without.iter().all(|(_, d)| !d.contains("p4")), "{secure:?}");

    // p4 comes back. A second secure job; the coordinator is killed (SIGKILL) with round 3 open and
    // restarted on its host: the job resumes from its store, round 3 runs again as a new instance, and no
    // round is committed twice. A secure round whose masked inputs were already sent is never repeated, by
    // design (see SECURITY.md), so no participant may send round 3's before the kill. After round 2 commits
    // the coordinator evaluates version 2 (a secure round of counts) and only then opens round 3, so each
    // participant is frozen (SIGSTOP) the moment its audit log records its answer to that evaluation, its
    // last part before round 3, and thawed once the coordinator is dead. Frozen, a participant sends
    // nothing, and round 3's key exchange needs every member's keys before anyone's masked input. Only the
    // participant that answers last can see round 3 open before its freeze lands, within milliseconds;
    // round 3's training (word trigrams and character n-grams of 1 to 8: a few times the first job's
    // features) takes far longer than that.
    ip(&["-n", &net.ns("p4"), "link", "set", &net.link("p4"), "up"]);
    let (ok, said) = operator(
        &net,
        &["job", "submit", "--spec", s(&job_file("restarted", true, MORE_NGRAMS)), "--detach"],
    );
    assert!(ok, "job submit: {said}");
    let done_round_2 = |p: &str| {
        let audit = d.join("data").join(p).join("audit/entries.jsonl");
        std::fs::read_to_string(audit)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"model.evaluate\"") && l.contains("job restarted version 2:"))
    };
    let mut frozen: Vec<&str> = Vec::new();
    let start = Instant::now();
    while frozen.len() < PARTICIPANTS.len() {
        for p in PARTICIPANTS {
            if !frozen.contains(&p) && done_round_2(p) {
                net.signal(p, "STOP");
                frozen.push(p);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "version 2 not evaluated by {:?}:\n{}",
            PARTICIPANTS.iter().filter(|p| !frozen.contains(p)).collect::<Vec<_>>(),
            context(&net, "restarted")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_log = d.join("coordinator-0.log");
    wait_until(
        "round 3 opened",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&first_log)
                .unwrap_or_default()
                .contains("secure-aggregation round open key=restarted round=3 ")
        },
        || context(&net, "restarted"),
    );
    net.kill("coordinator");
    for p in PARTICIPANTS {
        net.signal(p, "CONT");
    }
    let before = commits(&state, "restarted").len();
    assert_eq!(before, 2, "killed with rounds 1 and 2 committed and round 3 open");
    // Restarted at once: a thawed participant may still start round 3 of the dead coordinator (its
    // announcement was waiting unread) and send that instance's messages to the new process, which refuses
    // them as another instance's without dropping the participant from its own.
    start_coordinator(&mut net);
    wait_until(
        "the job finished after the restart",
        Duration::from_secs(240),
        || finished(&net, "restarted"),
        || context(&net, "restarted"),
    );
    let all = commits(&state, "restarted");
    let rounds: Vec<u64> = all.iter().map(|(r, _)| *r).collect();
    assert_eq!(rounds, (1..=ROUNDS).collect::<Vec<_>>(), "each round committed once, in order: {all:?}");
    assert!(before < all.len(), "rounds were committed after the restart: {all:?}");
    let audit = std::fs::read_to_string(state.join("audit/entries.jsonl")).unwrap();
    assert!(audit.contains("job.resume"), "the restarted coordinator resumed the job");
    // Whether this run met the race (it depends on timing): stale messages refused as another instance's.
    let stale =
        audit.lines().filter(|l| l.contains("secagg.message") && l.contains("message of instance")).count();
    eprintln!("messages of the dead coordinator's instance refused by the new one: {stale}");
}
