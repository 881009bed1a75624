//! Several hosts on one machine for the tests: the product's own [`hdfs_ingest::bench::net`] (which
//! `bench recovery --fault partition` runs on too), and the checks that it partitions as it says.

pub use hdfs_ingest::bench::net::{Entered, Net};

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
        std::thread::sleep(std::time::Duration::from_millis(300));
        let out = net
            .command(from, "python3")
            .args([
                "-c",
                &format!(
                    "import socket;c=socket.create_connection(('{}',{port}),timeout=2);c.sendall(b'hi');print(c.recv(64).decode())",
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
        let net = match Net::new(&["a", "b", "c"]) {
            Ok(n) => n,
            Err(e) => {
                println!("skipped: {e:#}");
                return;
            }
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
