#!/bin/bash
# A 3-process raft-kv cluster with mutual TLS between the nodes and with the clients:
# certificates made with `raft-kv certs`, put/get over TLS, the metrics, a plaintext client
# and a client and a peer of another CA refused (with what the nodes log), a remote shutdown
# by an authenticated client.
dir=${DIR:-target/kv-tls}; rm -rf "$dir"; mkdir -p "$dir"
K=${K:-target/release/raft-kv}
C=127.0.0.1:18201,127.0.0.1:18202,127.0.0.1:18203
P=1=127.0.0.1:17201/127.0.0.1:18201,2=127.0.0.1:17202/127.0.0.1:18202,3=127.0.0.1:17203/127.0.0.1:18203
run() { echo "\$ raft-kv $*"; $K "$@" > $dir/out 2>&1; code=$?; grep -v "^20..-" $dir/out; echo "(exit $code)"; }
tls() { echo "--tls-cert $1/$2.pem --tls-key $1/$2-key.pem --tls-ca $1/ca.pem"; }
run certs --dir $dir/certs --nodes 1,2,3
run certs --dir $dir/other --nodes 1,2,3
ls $dir/certs
for i in 1 2 3; do
  echo "\$ raft-kv serve --id $i --peers \$P --client-addr 127.0.0.1:1820$i --data-dir n$i --metrics-addr 127.0.0.1:1930$i $(tls certs node-$i) &"
  ( $K serve --id $i --peers $P --client-addr 127.0.0.1:1820$i --data-dir $dir/n$i \
    --metrics-addr 127.0.0.1:1930$i $(tls $dir/certs node-$i) > $dir/n$i.log 2>&1 & )
done
sleep 1.5
run put greeting hello --cluster $C $(tls $dir/certs client)
run get greeting --cluster $C $(tls $dir/certs client)
run status --cluster $C $(tls $dir/certs client)
echo "# a client without TLS"
run get greeting --cluster 127.0.0.1:18201
echo "# a client with a certificate of another CA (trusting the cluster's CA, so that the node is the one to refuse)"
run get greeting --cluster 127.0.0.1:18201 --tls-cert $dir/other/client.pem --tls-key $dir/other/client-key.pem --tls-ca $dir/certs/ca.pem
sleep 0.2
echo "# node 1's log:"
grep "refused a client" $dir/n1.log | sed 's/^[^ ]* *//; s/client=Some([^)]*) //' | uniq -c
leader=$($K status --cluster $C $(tls $dir/certs client) | awk '/Leader/ {print $3}')
echo "\$ curl -s http://127.0.0.1:1930$leader/metrics | grep -v '^#' | grep -v _bucket | grep -v ' 0\$'"
curl -s http://127.0.0.1:1930$leader/metrics | grep -v '^#' | grep -v _bucket | grep -v ' 0$' | grep -v '^$' | sort
victim=$(( leader % 3 + 1 ))
pkill -KILL -f "serve --id $victim "
sleep 0.5
echo "# node $victim killed, restarted with a certificate of another CA for its id, trusting the cluster's CA:"
$K serve --id $victim --peers $P --client-addr 127.0.0.1:1820$victim --data-dir $dir/n$victim \
  --tls-cert $dir/other/node-$victim.pem --tls-key $dir/other/node-$victim-key.pem \
  --tls-ca $dir/certs/ca.pem 2>&1 | grep -v "^20..-"
echo "# then with that other CA's certificate and trust (a member of another cluster):"
( $K serve --id $victim --peers $P --client-addr 127.0.0.1:1820$victim --data-dir $dir/n$victim \
  --tls-cert $dir/other/node-$victim.pem --tls-key $dir/other/node-$victim-key.pem \
  --tls-ca $dir/other/ca.pem > $dir/impostor.log 2>&1 & )
sleep 2
echo "# what the others log about it:"
grep -h "refusing a connection\|TLS with the peer failed" $dir/n*.log | sed 's/^[^ ]* *//; s/remote=[^ ]* //' | sort | uniq -c | head -4
echo "# what it logs:"
grep -h "refused\|TLS\|ERROR" $dir/impostor.log | sed 's/^[^ ]* *//' | sort | uniq -c | head -4
run put still working --cluster $C $(tls $dir/certs client)
echo "# an authenticated client may shut a node down"
run shutdown --node 127.0.0.1:1820$leader $(tls $dir/certs client)
pkill -KILL -f "raft-kv serve --id [0-9] --peers $P"
sleep 0.5
