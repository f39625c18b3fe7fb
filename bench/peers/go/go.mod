module tlsnet.bench/goserver

go 1.19
