# Helpers shared by the benchmark scripts (sourced, not run).

# A free TCP port on loopback.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_nginx DIR PORT BODY: one nginx worker on 127.0.0.1:PORT answering every request with
# BODY (keep-alive without a request limit, no access log), its files in DIR; its pid is added
# to the caller's `pids` array.
start_nginx() {
  local dir=$1 listen=$2 body=$3
  cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$listen; location / { default_type text/plain; return 200 "$body\n"; } }
}
CONF
  nginx -c "$dir/nginx.conf" -p "$dir" &
  pids+=($!)
}
