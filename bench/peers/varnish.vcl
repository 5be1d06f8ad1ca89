vcl 4.1;
# Varnish beside Sluice in the load test (bench/run.sh): cache hits on 28094
# from the origin on 28080, which answers with max-age=60. Varnish's built-in
# rules do the rest (the requests carry no Cookie or Authorization).
# Started as:  varnishd -F -n <run dir>/varnish -a 127.0.0.1:28094 -f <this file> ...

backend origin {
    .host = "127.0.0.1";
    .port = "28080";
}
