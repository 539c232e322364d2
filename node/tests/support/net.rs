//! Several nodes on loopback, each on its own address (127.X.Y.1, .2, ... with X
//! and Y drawn per network, so networks of tests running at once do not meet),
//! node 1 everyone's bootstrap. Nodes can be stopped and started again on the
//! same data dir and address.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{TestNode, wait_until};

pub struct TestNet {
    nodes: Vec<Option<TestNode>>,
    dirs: Vec<tempfile::TempDir>,
    ips: Vec<String>,
    args: Vec<String>,
}

/// Loopback /24s handed out in this process, so two networks never share one.
static NEXT: AtomicU32 = AtomicU32::new(0);

fn subnet() -> (u8, u8) {
    let mut seed = [0u8; 2];
    getrandom::fill(&mut seed).unwrap();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // 127.X.Y.0/24 with X in 32..=223: away from 127.0.0.0/16, which the testnet
    // script and single-node tests use.
    let x = 32 + ((seed[0] as u32 + n) % 192) as u8;
    let y = seed[1].wrapping_add((n / 192) as u8);
    (x, y)
}

impl TestNet {
    /// `n` nodes started with `args`, node 1 alone and the others bootstrapped to
    /// it; returns once node 1 lists every other node.
    pub fn start(n: usize, args: &[&str]) -> TestNet {
        let net = Self::unstarted(n, args);
        net.started()
    }

    /// `n` nodes with their dirs and addresses, none running yet.
    pub fn unstarted(n: usize, args: &[&str]) -> TestNet {
        let (x, y) = subnet();
        TestNet {
            nodes: (0..n).map(|_| None).collect(),
            dirs: (0..n).map(|_| tempfile::tempdir().unwrap()).collect(),
            ips: (1..=n).map(|i| format!("127.{x}.{y}.{i}")).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn started(mut self) -> TestNet {
        self.up(0, &[]);
        let boot = self.boot();
        for i in 1..self.len() {
            self.up(i, &["--bootstrap", &boot]);
        }
        self.wait_star();
        self
    }

    /// Node 1's TCP swarm address.
    pub fn boot(&self) -> String {
        self.node(0).listen[0].clone()
    }

    /// Wait until node 1 lists every other running node.
    pub fn wait_star(&self) {
        let first = self.node(0);
        let others: Vec<String> = self
            .nodes
            .iter()
            .skip(1)
            .flatten()
            .map(|n| n.peer_id.clone())
            .collect();
        wait_until("node 1 lists every other node", || {
            let listed = first.peer_ids();
            if others.iter().all(|p| listed.contains(p)) {
                Ok(())
            } else {
                Err(format!("node 1 lists {listed:?}"))
            }
        });
    }

    /// Wait until every running node lists every other.
    pub fn wait_mesh(&self) {
        let running: Vec<&TestNode> = self.nodes.iter().flatten().collect();
        wait_until("every node lists every other", || {
            for n in &running {
                let listed = n.peer_ids();
                let missing: Vec<&str> = running
                    .iter()
                    .filter(|m| m.peer_id != n.peer_id && !listed.contains(&m.peer_id))
                    .map(|m| m.peer_id.as_str())
                    .collect();
                if !missing.is_empty() {
                    return Err(format!("{} misses {missing:?}", n.peer_id));
                }
            }
            Ok(())
        });
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (from 0); it must be running.
    pub fn node(&self, i: usize) -> &TestNode {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", i + 1))
    }

    pub fn node_mut(&mut self, i: usize) -> &mut TestNode {
        self.nodes[i]
            .as_mut()
            .unwrap_or_else(|| panic!("node {} is not running", i + 1))
    }

    /// The running nodes.
    pub fn nodes(&self) -> Vec<&TestNode> {
        self.nodes.iter().flatten().collect()
    }

    /// An address of this net's /24 that no node uses: a client's own address,
    /// where nothing else listens.
    pub fn spare_ip(&self) -> String {
        let (prefix, _) = self.ips[0].rsplit_once('.').expect("an IPv4 address");
        format!("{prefix}.250")
    }

    pub fn ip(&self, i: usize) -> &str {
        &self.ips[i]
    }

    pub fn dir(&self, i: usize) -> &std::path::Path {
        self.dirs[i].path()
    }

    /// Start node `i` on its dir and address, with the network's args and `extra`.
    pub fn up(&mut self, i: usize, extra: &[&str]) -> &TestNode {
        assert!(self.nodes[i].is_none(), "node {} is running", i + 1);
        let args: Vec<&str> = self
            .args
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        let node = TestNode::start_on(&self.ips[i], self.dirs[i].path(), &args);
        self.nodes[i] = Some(node);
        self.node(i)
    }

    /// Stop node `i` cleanly.
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].take().expect("running").stop();
    }

    /// SIGKILL node `i`, which must still be running (a node that died by itself
    /// must not pass as killed).
    pub fn kill(&mut self, i: usize) {
        let mut node = self.nodes[i].take().expect("started");
        assert!(
            node.running(),
            "node {} exited by itself before the SIGKILL: {:?}",
            i + 1,
            node.child.try_wait()
        );
        node.kill();
    }
}
