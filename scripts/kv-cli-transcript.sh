#!/bin/bash
# The client CLI against a 3-process raft-kv cluster: put, get, delete, status, a SIGTERM of
# the leader (it hands leadership over before exiting), and the error when no node answers.
dir=${DIR:-target/kv-cli}; rm -rf "$dir"; mkdir -p "$dir"
K=${K:-target/release/raft-kv}
C=127.0.0.1:18101,127.0.0.1:18102,127.0.0.1:18103
P=1=127.0.0.1:17101/127.0.0.1:18101,2=127.0.0.1:17102/127.0.0.1:18102,3=127.0.0.1:17103/127.0.0.1:18103
run() { echo "\$ raft-kv $*"; $K "$@" > $dir/out 2>&1; code=$?; grep -v "^20..-" $dir/out; echo "(exit $code)"; }
for i in 1 2 3; do
  echo "\$ raft-kv serve --id $i --peers $P --client-addr 127.0.0.1:1810$i --data-dir n$i &"
  $K serve --id $i --peers $P --client-addr 127.0.0.1:1810$i --data-dir $dir/n$i > $dir/n$i.log 2>&1 &
done
sleep 1.5
run put greeting hello --cluster $C
run get greeting --cluster $C
run put greeting "hello again" --cluster 127.0.0.1:18102
run get greeting --cluster 127.0.0.1:18103
run get missing --cluster $C
run delete greeting --cluster $C
run get greeting --cluster $C
run status --cluster $C
leader=$($K status --cluster $C | awk '/Leader/ {print $3}')
echo "\$ kill -TERM <node $leader, the leader>"
pkill -TERM -f "serve --id $leader "
sleep 0.3
run status --cluster $C
run put after-sigterm yes --cluster $C
echo "\$ kill the other nodes"
pkill -f "raft-kv serve --id"
sleep 0.5
run get greeting --cluster $C
run status --cluster $C
