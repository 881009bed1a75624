//! Several hosts on one machine, for tests of what crosses a network: each host is a network namespace
//! with one veth link to a switch (a Linux bridge in a namespace of its own), an address in
//! `10.213.0.0/24`, and its loopback up. Processes run inside a host as `ip netns exec <ns> <program>`
//! (which execs: the child's pid is the program's, so SIGKILL and SIGSTOP reach it).
//!
//! # Partitions
//!
//! - [`Net::cut`]`(a, b)` drops everything between two hosts and nothing else: a blackhole route to
//!   the other's address in each of the two namespaces. Packets of connections already open vanish
//!   (the kernel keeps retransmitting, nothing errors: a half-open connection), new connections
//!   between the two fail at once; [`Net::heal`] removes the routes, and open connections carry on.
//! - [`Net::isolate`]`(a)` takes the host's link down: it reaches no one and no one reaches it;
//!   [`Net::rejoin`] brings it up again.
//!
//! The addresses are private to the namespaces made here: nothing is ever sent outside them. Every
//! [`Net`] has its own switch, so nets of tests running side by side never see each other, and the
//! same addresses are reused in each. Dropping a [`Net`] deletes its namespaces (and with them their
//! links); processes still running in them must be ended first.
//!
//! Callers (the partition tests in `it/`, `bench recovery --fault partition`) call [`Net::new`] and
//! skip or fail, saying why, when namespaces cannot be made (not root, no `ip`, a container without
//! the capability, not Linux).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// The subnet every net uses (inside its own namespaces only).
const SUBNET: &str = "10.213.0";

/// A set of hosts joined by one switch.
pub struct Net {
    /// Unique per net: the namespaces' and links' names start with it.
    tag: String,
    switch: String,
    hosts: BTreeMap<String, Host>,
}

#[derive(Clone, Debug)]
struct Host {
    ns: String,
    ip: String,
    /// The host's end of its link (in the host's namespace).
    link: String,
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("run {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `program` run inside the network namespace `ns` (`ip netns exec`, which execs: the child's pid is
/// the program's).
pub fn exec_in(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

impl Net {
    /// Makes a switch and one host per name. An error says why namespaces cannot be made here; tests
    /// print it and skip.
    pub fn new(names: &[&str]) -> anyhow::Result<Net> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:04x}{n:02x}", std::process::id() & 0xffff);
        let switch = format!("hi{tag}-sw");
        let mut net = Net {
            tag: tag.clone(),
            switch: switch.clone(),
            hosts: BTreeMap::new(),
        };
        // A namespace of this name can only be left over from a killed earlier process with the
        // same pid: nothing runs in it any more.
        let _ = run(&["ip", "netns", "del", &switch]);
        run(&["ip", "netns", "add", &switch]).context(
            "cannot make a network namespace (the partition tests need root and iproute2)",
        )?;
        in_ns(&switch, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(&switch, &["ip", "link", "set", "br0", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("hi{tag}-{name}");
            let link = format!("h{tag}{i}");
            let port = format!("s{tag}{i}");
            let ip = format!("{SUBNET}.{}", i + 1);
            let _ = run(&["ip", "netns", "del", &ns]);
            run(&["ip", "netns", "add", &ns])?;
            net.hosts.insert(
                name.to_string(),
                Host {
                    ns: ns.clone(),
                    ip: ip.clone(),
                    link: link.clone(),
                },
            );
            run(&[
                "ip", "link", "add", &link, "type", "veth", "peer", "name", &port,
            ])?;
            run(&["ip", "link", "set", &link, "netns", &ns])?;
            run(&["ip", "link", "set", &port, "netns", &switch])?;
            in_ns(&switch, &["ip", "link", "set", &port, "master", "br0"])?;
            in_ns(&switch, &["ip", "link", "set", &port, "up"])?;
            in_ns(
                &ns,
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", &link],
            )?;
            in_ns(&ns, &["ip", "link", "set", &link, "up"])?;
            in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("no host {name} in net {}", self.tag))
    }

    /// The host's address.
    pub fn ip(&self, name: &str) -> &str {
        &self.host(name).ip
    }

    /// The host's namespace.
    pub fn ns(&self, name: &str) -> &str {
        &self.host(name).ns
    }

    /// `program` to run inside the host.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        exec_in(self.ns(name), program)
    }

    /// Moves the calling thread into the host's namespace until the guard is dropped: sockets it makes
    /// then are the host's, and so are those of threads it starts (a tokio runtime built after this
    /// call, say) and processes it spawns. This is how a test reads an HDFS that sits on a host of its
    /// own. Build what needs the machine's own network (the binary under test, the MiniDFS harness)
    /// before entering.
    pub fn enter(&self, name: &str) -> anyhow::Result<Entered> {
        let open = |path: &str| std::fs::File::open(path).with_context(|| format!("open {path}"));
        let home = open("/proc/thread-self/ns/net")?;
        let there = open(&format!("/run/netns/{}", self.ns(name)))?;
        setns(&there).with_context(|| format!("enter the namespace of {name}"))?;
        Ok(Entered {
            home,
            _this_thread: std::marker::PhantomData,
        })
    }

    /// Drops all traffic between `a` and `b` (see the module doc).
    pub fn cut(&self, a: &str, b: &str) -> anyhow::Result<()> {
        let (ha, hb) = (self.host(a), self.host(b));
        in_ns(
            &ha.ns,
            &["ip", "route", "add", "blackhole", &format!("{}/32", hb.ip)],
        )?;
        in_ns(
            &hb.ns,
            &["ip", "route", "add", "blackhole", &format!("{}/32", ha.ip)],
        )
    }

    /// Undoes [`Net::cut`].
    pub fn heal(&self, a: &str, b: &str) -> anyhow::Result<()> {
        let (ha, hb) = (self.host(a), self.host(b));
        in_ns(
            &ha.ns,
            &["ip", "route", "del", "blackhole", &format!("{}/32", hb.ip)],
        )?;
        in_ns(
            &hb.ns,
            &["ip", "route", "del", "blackhole", &format!("{}/32", ha.ip)],
        )
    }

    /// Takes the host's link down: it reaches no one.
    pub fn isolate(&self, name: &str) -> anyhow::Result<()> {
        let h = self.host(name);
        in_ns(&h.ns, &["ip", "link", "set", &h.link, "down"])
    }

    /// Brings an isolated host's link up again.
    pub fn rejoin(&self, name: &str) -> anyhow::Result<()> {
        let h = self.host(name);
        in_ns(&h.ns, &["ip", "link", "set", &h.link, "up"])
    }
}

#[cfg(target_os = "linux")]
fn setns(ns: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns(2) takes a file descriptor we own for the call's duration and a flag; it only
    // changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn setns(_: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::other("network namespaces are Linux only"))
}

/// The calling thread is inside a host's namespace (see [`Net::enter`]); dropping it goes back. It
/// stays on the thread that entered (not `Send`): dropped elsewhere it would move that thread.
pub struct Entered {
    home: std::fs::File,
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.home) {
            // This thread would go on in a host's namespace: no later work on it can be trusted.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in self.hosts.values() {
            let _ = run(&["ip", "netns", "del", &h.ns]);
        }
        let _ = run(&["ip", "netns", "del", &self.switch]);
    }
}
