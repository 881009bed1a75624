package hdfsingest.minidfs;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.MiniDFSCluster.DataNodeProperties;
import org.apache.hadoop.hdfs.MiniDFSNNTopology;
import org.apache.hadoop.hdfs.server.blockmanagement.DatanodeDescriptor;
import org.apache.hadoop.hdfs.server.datanode.DataNode;

/**
 * hdfs-ingest's MiniDFSCluster harness: the real NameNode and DataNode code in one JVM, controlled
 * line by line over stdin so integration tests can stop and restart the NameNode or a DataNode
 * mid-test.
 *
 * <p>Arguments (all optional): {@code --port P} (NameNode RPC port, 0 = a free one),
 * {@code --datanodes N} (default 3), {@code --replication R} (default min(3, N)),
 * {@code --block-size BYTES} (default 1 MiB, the smallest a stock NameNode accepts is lowered to
 * allow smaller ones), {@code --base-dir DIR} (where the cluster keeps its data; default a temp dir),
 * {@code --conf KEY=VALUE} (any number of times: a Hadoop configuration key for the whole cluster, set
 * after the harness's own settings, so it overrides them; e.g.
 * {@code --conf dfs.namenode.fs-limits.max-directory-items=32}).
 *
 * <p>Protocol: stdout carries only the protocol, everything else (Hadoop's logs) goes to stderr.
 * Once the cluster is up and out of safe mode, exactly one line {@code READY hdfs://127.0.0.1:PORT}
 * is printed. Then each stdin line is a command answered by {@code OK} or {@code ERR <message>}:
 * {@code stop-namenode}, {@code restart-namenode} (same port, same data), {@code stop-datanode I},
 * {@code restart-datanode I} (same ports, same data; I counts from 0 in start order and does not
 * shift when another DataNode stops), {@code wait-datanode-dead I} (returns once the NameNode has
 * declared the stopped DataNode I dead by heartbeat expiry, about 14 s with the settings below),
 * {@code shutdown}. EOF on stdin also shuts the cluster down,
 * so a test process that dies never leaves a JVM behind.
 *
 * <p>{@code --ha true}: two NameNodes of the name service {@code minidfs-ns} with shared edits (no
 * automatic failover: the harness decides), nn1 active. The READY line is then
 * {@code READY hdfs://minidfs-ns conf=DIR}, DIR holding the {@code core-site.xml} and
 * {@code hdfs-site.xml} a client needs for the name service. Two more commands:
 * {@code failover} (the active NameNode becomes standby and the other one active) and
 * {@code kill-active-namenode} (the active one is shut down and the other one made active).
 *
 * <p>{@code --host IP}: the cluster serves other hosts (network namespaces) at IP; not combined
 * with {@code --ha}, whose client configuration names 127.0.0.1.
 */
public final class Main {

    private final MiniDFSCluster cluster;
    /** DataNodes by their stable index: the running DataNode, or null while stopped. */
    private final List<DataNode> running = new ArrayList<>();
    /** Properties of stopped DataNodes by their stable index, to restart them. */
    private final List<DataNodeProperties> stopped = new ArrayList<>();
    /** DataNode UUIDs by stable index (they survive a restart: same storage). */
    private final List<String> uuids = new ArrayList<>();
    private boolean nameNodeUp = true;
    /** With --ha: the index of the active NameNode. */
    private int active = 0;

    private Main(MiniDFSCluster cluster) {
        this.cluster = cluster;
        for (DataNode dn : cluster.getDataNodes()) {
            running.add(dn);
            stopped.add(null);
            uuids.add(dn.getDatanodeUuid());
        }
    }

    public static void main(String[] args) throws Exception {
        // Keep the protocol channel for ourselves; anything else that writes to stdout goes to stderr.
        PrintStream protocol = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        System.setOut(System.err);

        int port = 0;
        int dataNodes = 3;
        int replication = -1;
        long blockSize = 1024 * 1024;
        String baseDir = null;
        String host = null;
        boolean ha = false;
        List<String[]> extra = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            String flag = args[i];
            if (i + 1 >= args.length) {
                fail(protocol, "flag " + flag + " needs a value");
            }
            String value = args[++i];
            switch (flag) {
                case "--port" -> port = Integer.parseInt(value);
                case "--datanodes" -> dataNodes = Integer.parseInt(value);
                case "--replication" -> replication = Integer.parseInt(value);
                case "--block-size" -> blockSize = Long.parseLong(value);
                case "--base-dir" -> baseDir = value;
                case "--host" -> host = value;
                case "--ha" -> ha = Boolean.parseBoolean(value);
                case "--conf" -> {
                    int eq = value.indexOf('=');
                    if (eq <= 0) {
                        fail(protocol, "--conf takes KEY=VALUE, not " + value);
                    }
                    extra.add(new String[] {value.substring(0, eq), value.substring(eq + 1)});
                }
                default -> fail(protocol, "unknown flag " + flag);
            }
        }
        if (replication < 0) {
            replication = Math.min(3, dataNodes);
        }
        if (dataNodes < 1 || replication < 1 || replication > dataNodes) {
            fail(protocol, "need 1 <= replication (" + replication + ") <= datanodes (" + dataNodes + ")");
        }
        if (blockSize <= 0 || blockSize % 512 != 0) {
            fail(protocol, "block size " + blockSize + " must be a positive multiple of 512");
        }
        File base = baseDir != null
            ? new File(baseDir)
            : java.nio.file.Files.createTempDirectory("minidfs").toFile();

        Configuration conf = new HdfsConfiguration();
        conf.setLong("dfs.blocksize", blockSize);
        // The stock minimum (1 MiB) would refuse smaller test block sizes.
        conf.setLong("dfs.namenode.fs-limits.min-block-size", 512);
        conf.setInt("dfs.replication", replication);
        conf.setBoolean("dfs.permissions.enabled", false);
        // Leave safe mode as soon as the NameNode is up (also after a restart): tests write at once.
        conf.setFloat("dfs.namenode.safemode.threshold-pct", 0f);
        conf.setInt("dfs.namenode.safemode.extension", 0);
        // Notice a stopped DataNode within seconds, not ten minutes.
        conf.setLong("dfs.heartbeat.interval", 1);
        conf.setInt("dfs.namenode.heartbeat.recheck-interval", 2000);
        // A pipeline that loses a DataNode keeps going with the rest when it must (small clusters).
        conf.set("dfs.client.block.write.replace-datanode-on-failure.policy", "NEVER");

        // --host IP: the cluster serves other hosts (network namespaces) at IP: the NameNode listens on
        // every address, the DataNodes too, and they register under IP as their host name, which a
        // client with dfs.client.use.datanode.hostname connects to.
        if (host != null) {
            conf.set("dfs.namenode.rpc-bind-host", "0.0.0.0");
            conf.set("dfs.namenode.servicerpc-bind-host", "0.0.0.0");
            conf.set("dfs.datanode.address", "0.0.0.0:0");
            conf.set("dfs.datanode.ipc.address", "0.0.0.0:0");
            conf.set("dfs.datanode.http.address", "0.0.0.0:0");
            conf.set("dfs.datanode.hostname", host);
        }
        // --conf KEY=VALUE: last, so a test's setting wins over the harness's.
        for (String[] kv : extra) {
            conf.set(kv[0], kv[1]);
        }

        MiniDFSCluster cluster;
        try {
            MiniDFSCluster.Builder builder = new MiniDFSCluster.Builder(conf, base);
            if (ha) {
                builder.nnTopology(MiniDFSNNTopology.simpleHATopology());
            } else {
                builder.nameNodePort(port).nameNodeHttpPort(0);
            }
            cluster = builder
                .numDataNodes(dataNodes)
                .checkDataNodeAddrConfig(host != null)
                .checkDataNodeHostConfig(host != null)
                .build();
            cluster.waitActive();
        } catch (Exception e) {
            e.printStackTrace();
            fail(protocol, "starting the cluster failed: " + oneLine(e));
            return;
        }

        Main main = new Main(cluster);
        if (ha) {
            try {
                cluster.transitionToActive(0);
                cluster.waitActive();
                File confDir = new File(base, "client-conf");
                writeHaClientConf(confDir, cluster);
                protocol.println("READY hdfs://" + NAMESERVICE + " conf=" + confDir.getAbsolutePath());
            } catch (Exception e) {
                e.printStackTrace();
                fail(protocol, "making nn1 active failed: " + oneLine(e));
                return;
            }
        } else {
            protocol.println("READY hdfs://" + (host != null ? host : "127.0.0.1") + ":" + cluster.getNameNodePort());
        }

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            line = line.trim();
            if (line.isEmpty()) {
                continue;
            }
            if (line.equals("shutdown")) {
                break;
            }
            try {
                main.run(line);
                protocol.println("OK");
            } catch (Exception e) {
                e.printStackTrace();
                protocol.println("ERR " + oneLine(e));
            }
        }
        try {
            cluster.shutdown(true);
        } catch (Exception e) {
            e.printStackTrace();
        }
        protocol.println("OK");
        // Hadoop leaves non-daemon threads behind; the cluster is down, so leave now.
        System.exit(0);
    }

    private void run(String line) throws Exception {
        String[] words = line.split("\\s+");
        switch (words[0]) {
            case "stop-namenode" -> {
                expectArgs(words, 0);
                if (!nameNodeUp) {
                    throw new IllegalStateException("the NameNode is already stopped");
                }
                cluster.shutdownNameNode(0);
                nameNodeUp = false;
            }
            case "restart-namenode" -> {
                expectArgs(words, 0);
                // Same configuration (bound port, name directories) as before: same port, same data.
                cluster.restartNameNode(0, true);
                nameNodeUp = true;
            }
            case "stop-datanode" -> {
                expectArgs(words, 1);
                int i = dataNodeIndex(words[1]);
                DataNode dn = running.get(i);
                if (dn == null) {
                    throw new IllegalStateException("DataNode " + i + " is already stopped");
                }
                int current = cluster.getDataNodes().indexOf(dn);
                if (current < 0) {
                    throw new IllegalStateException("DataNode " + i + " is not in the cluster");
                }
                stopped.set(i, cluster.stopDataNode(current));
                running.set(i, null);
            }
            case "restart-datanode" -> {
                expectArgs(words, 1);
                int i = dataNodeIndex(words[1]);
                DataNodeProperties props = stopped.get(i);
                if (props == null) {
                    throw new IllegalStateException("DataNode " + i + " is running; stop it first");
                }
                // keepPort = true: it comes back at the address the NameNode and clients knew.
                if (!cluster.restartDataNode(props, true)) {
                    throw new IllegalStateException("DataNode " + i + " did not restart");
                }
                List<DataNode> all = cluster.getDataNodes();
                running.set(i, all.get(all.size() - 1));
                uuids.set(i, all.get(all.size() - 1).getDatanodeUuid());
                stopped.set(i, null);
                if (nameNodeUp) {
                    cluster.waitActive();
                }
            }
            case "wait-datanode-dead" -> {
                expectArgs(words, 1);
                int i = dataNodeIndex(words[1]);
                if (running.get(i) != null) {
                    throw new IllegalStateException("DataNode " + i + " is running; stop it first");
                }
                if (!nameNodeUp) {
                    throw new IllegalStateException("the NameNode is stopped");
                }
                waitDead(i);
            }
            case "failover" -> {
                expectArgs(words, 0);
                int other = 1 - active;
                cluster.transitionToStandby(active);
                cluster.transitionToActive(other);
                active = other;
            }
            case "kill-active-namenode" -> {
                expectArgs(words, 0);
                int other = 1 - active;
                cluster.shutdownNameNode(active);
                cluster.transitionToActive(other);
                active = other;
            }
            default -> throw new IllegalArgumentException("unknown command " + words[0]);
        }
    }

    /** The name service of {@code MiniDFSNNTopology.simpleHATopology()}. */
    private static final String NAMESERVICE = "minidfs-ns";

    /** Writes the client side of the HA name service: its two NameNodes' RPC addresses. */
    private static void writeHaClientConf(File dir, MiniDFSCluster cluster) throws Exception {
        if (!dir.mkdirs() && !dir.isDirectory()) {
            throw new IllegalStateException("cannot create " + dir);
        }
        StringBuilder hdfs = new StringBuilder("<?xml version=\"1.0\"?>\n<configuration>\n");
        java.util.function.BiConsumer<String, String> prop = (k, v) -> hdfs.append("  <property><name>")
            .append(k).append("</name><value>").append(v).append("</value></property>\n");
        prop.accept("dfs.nameservices", NAMESERVICE);
        prop.accept("dfs.ha.namenodes." + NAMESERVICE, "nn1,nn2");
        for (int i = 0; i < 2; i++) {
            java.net.InetSocketAddress a = cluster.getNameNode(i).getNameNodeAddress();
            prop.accept("dfs.namenode.rpc-address." + NAMESERVICE + ".nn" + (i + 1),
                "127.0.0.1:" + a.getPort());
        }
        prop.accept("dfs.client.failover.proxy.provider." + NAMESERVICE,
            "org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider");
        hdfs.append("</configuration>\n");
        java.nio.file.Files.writeString(new File(dir, "hdfs-site.xml").toPath(), hdfs.toString());
        java.nio.file.Files.writeString(new File(dir, "core-site.xml").toPath(),
            "<?xml version=\"1.0\"?>\n<configuration>\n  <property><name>fs.defaultFS</name><value>hdfs://"
                + NAMESERVICE + "</value></property>\n</configuration>\n");
    }

    /** Waits until the NameNode has declared DataNode {@code i} dead (heartbeat expiry). */
    private void waitDead(int i) throws Exception {
        String uuid = uuids.get(i);
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (true) {
            DatanodeDescriptor d = cluster.getNamesystem().getBlockManager().getDatanodeManager()
                .getDatanode(uuid);
            if (d == null || !d.isAlive()) {
                return;
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("DataNode " + i + " still alive at the NameNode after 120 s");
            }
            Thread.sleep(100);
        }
    }

    private int dataNodeIndex(String word) {
        int i;
        try {
            i = Integer.parseInt(word);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("DataNode index " + word + " is not a number");
        }
        if (i < 0 || i >= running.size()) {
            throw new IllegalArgumentException(
                "DataNode index " + i + " out of range 0.." + (running.size() - 1));
        }
        return i;
    }

    private static void expectArgs(String[] words, int n) {
        if (words.length != n + 1) {
            throw new IllegalArgumentException(words[0] + " takes " + n + " argument(s)");
        }
    }

    private static String oneLine(Throwable e) {
        String msg = e.getClass().getName() + ": " + e.getMessage();
        return msg.replace('\n', ' ').replace('\r', ' ');
    }

    private static void fail(PrintStream protocol, String message) {
        protocol.println("ERR " + message.replace('\n', ' '));
        System.exit(2);
    }
}
