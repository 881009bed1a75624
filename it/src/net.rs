//! Several hosts on one machine for the tests: the product's own [`hdfs_ingest::bench::net`] (which
//! `bench recovery --fault partition` runs on too), and the checks that it partitions as it says.

pub use hdfs_ingest::bench::net::{exec_in, Entered, Net};

/// A net for a test, or `None` (with the reason printed) where namespaces cannot be made here — unless
/// `IT_REQUIRE_NETNS` is set (CI sets it), which turns that skip into a failure, so a machine that
/// silently cannot run the partition tests never looks green.
pub fn for_test(hosts: &[&str]) -> Option<Net> {
    match Net::new(hosts) {
        Ok(n) => Some(n),
        Err(e) if std::env::var_os("IT_REQUIRE_NETNS").is_none() => {
            println!("skipped: {e:#}");
            None
        }
        Err(e) => panic!("IT_REQUIRE_NETNS is set, and the net cannot be made: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener in `b`, a client in `a`, through the net: what the tests rely on.
    fn echo_once(net: &Net, from: &str, to: &str) -> anyhow::Result<String> {
        let port = 7101;
        let mut server = net
            .command(to, "python3")
            .args([
                "-c",
                &format!(
                    "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{}',{port}));s.listen();c,_=s.accept();c.sendall(c.recv(64));c.close()",
                    net.ip(to)
                ),
            ])
            .spawn()?;
        let out = net
            .command(from, "python3")
            .args([
                "-c",
                &format!(
                    "import socket,time\nend=time.time()+3\nwhile time.time()<end:\n try:\n  c=socket.create_connection(('{}',{port}),timeout=1);c.sendall(b'hi');print(c.recv(64).decode());break\n except OSError:\n  time.sleep(0.1)",
                    net.ip(to)
                ),
            ])
            .output()?;
        let _ = server.kill();
        let _ = server.wait();
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    #[test]
    fn hosts_reach_each_other_until_cut_and_again_once_healed() {
        let Some(net) = for_test(&["a", "b", "c"]) else {
            return;
        };
        assert_eq!(echo_once(&net, "a", "b").unwrap(), "hi");
        net.cut("a", "b").unwrap();
        assert_eq!(
            echo_once(&net, "a", "b").unwrap(),
            "",
            "a cut pair talks no more"
        );
        assert_eq!(
            echo_once(&net, "c", "b").unwrap(),
            "hi",
            "others are not cut"
        );
        net.heal("a", "b").unwrap();
        assert_eq!(echo_once(&net, "a", "b").unwrap(), "hi");
        net.isolate("c").unwrap();
        assert_eq!(echo_once(&net, "a", "c").unwrap(), "");
        net.rejoin("c").unwrap();
        assert_eq!(echo_once(&net, "a", "c").unwrap(), "hi");
    }
}
