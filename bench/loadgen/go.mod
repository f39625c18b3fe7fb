module tlsnet.bench/loadgen

go 1.19
