#!/bin/bash
# Grows a 1-node raft-kv cluster to 3 processes with the CLI, kills one, replaces it with a
# fresh node, and reads every key back.
dir=${DIR:-target/kv-membership}; rm -rf "$dir"; mkdir -p "$dir"
K=${K:-target/release/raft-kv}
run() { echo "\$ raft-kv $*"; $K "$@" 2>&1 | grep -v "^20..-"; }
echo '$ raft-kv serve --id 1 --peers 1=127.0.0.1:17001 --client-addr 127.0.0.1:18001 --data-dir n1 &'
$K serve --id 1 --peers 1=127.0.0.1:17001 --client-addr 127.0.0.1:18001 --data-dir $dir/n1 > $dir/n1.log 2>&1 &
sleep 1.5
run fill --cluster 127.0.0.1:18001 --count 100
echo '$ raft-kv serve --id 2 --raft-addr 127.0.0.1:17002 --join 127.0.0.1:18001 --client-addr 127.0.0.1:18002 --data-dir n2 &'
$K serve --id 2 --raft-addr 127.0.0.1:17002 --join 127.0.0.1:18001 --client-addr 127.0.0.1:18002 --data-dir $dir/n2 > $dir/n2.log 2>&1 &
sleep 2
run members list --cluster 127.0.0.1:18001
run members promote --cluster 127.0.0.1:18001 --id 2
echo '$ raft-kv serve --id 3 --raft-addr 127.0.0.1:17003 --join 127.0.0.1:18001 --client-addr 127.0.0.1:18003 --data-dir n3 &'
$K serve --id 3 --raft-addr 127.0.0.1:17003 --join 127.0.0.1:18001 --client-addr 127.0.0.1:18003 --data-dir $dir/n3 > $dir/n3.log 2>&1 &
sleep 2
run members promote --cluster 127.0.0.1:18001 --id 3
run fill --cluster 127.0.0.1:18001 --count 100 --from 100
echo '$ kill -9 <node 2>'
pkill -9 -f "serve --id 2 "
sleep 0.5
echo '$ raft-kv serve --id 4 --raft-addr 127.0.0.1:17004 --join 127.0.0.1:18001,127.0.0.1:18003 --client-addr 127.0.0.1:18004 --data-dir n4 &'
$K serve --id 4 --raft-addr 127.0.0.1:17004 --join 127.0.0.1:18001,127.0.0.1:18003 --client-addr 127.0.0.1:18004 --data-dir $dir/n4 > $dir/n4.log 2>&1 &
sleep 2
run members promote --cluster 127.0.0.1:18001,127.0.0.1:18003 --id 4
run members remove --cluster 127.0.0.1:18001,127.0.0.1:18003 --id 2
run fill --cluster 127.0.0.1:18001,127.0.0.1:18003 --count 100 --from 200
run check --cluster 127.0.0.1:18001,127.0.0.1:18003 --count 300
for n in 1 3 4; do run check --cluster 127.0.0.1:18001 --count 300 --node 127.0.0.1:1800$n; done
run members list --cluster 127.0.0.1:18001
pkill -f "raft-kv serve --id"
