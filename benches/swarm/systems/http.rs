//! HTTP: nginx on the origin, `curl` on every receiver.

use super::*;

const HTTP_PORT: u16 = 8080;

pub fn run(bench: &Bench<'_>, dir: &Path) -> Result<SystemRun> {
    let payload_dir = bench
        .payload
        .parent()
        .context("the payload has no directory")?;
    let name = bench
        .payload
        .file_name()
        .and_then(|n| n.to_str())
        .context("the payload has no UTF-8 file name")?;
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir(&nginx_dir)
        .with_context(|| format!("cannot create {}", nginx_dir.display()))?;
    let listen = format!("{}:{HTTP_PORT}", bench.ip_of(0));
    let d = nginx_dir.display();
    // One worker with sendfile: the cheapest way a stock server sends a file.
    let conf = format!(
        "daemon off;\n\
         master_process on;\n\
         worker_processes 1;\n\
         user root;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   sendfile on;\n\
         \x20   tcp_nopush on;\n\
         \x20   default_type application/octet-stream;\n\
         \x20   client_body_temp_path {d}/body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   server {{\n\
         \x20       listen {listen};\n\
         \x20       root {};\n\
         \x20   }}\n\
         }}\n",
        payload_dir.display()
    );
    let conf_path = nginx_dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)
        .with_context(|| format!("cannot write {}", conf_path.display()))?;
    create_receiver_dirs(bench, dir)?;

    let mut procs = Procs::new(bench.tools.get("ip"), &dir.join("logs"))?;
    let server = procs.spawn(
        bench.netns(0),
        "nginx (origin)",
        bench.tools.get("nginx"),
        Args::default()
            .opt("-p", &nginx_dir)
            .opt("-c", &conf_path)
            .opt("-e", nginx_dir.join("error.log")),
        false,
    )?;
    bench.swarm.wait_listening(
        bench.tools.get("ss"),
        0,
        &listen,
        ORIGIN_START_TIMEOUT,
        || procs.check_running(server),
    )?;

    let url = format!("http://{listen}/{name}");
    let tx_before = bench.swarm.tx_bytes(0)?;
    let start = now();
    let mut receivers = Vec::new();
    let mut paths = Vec::new();
    for host in 1..bench.config.hosts {
        let out = receiver_dir(dir, host).join(name);
        let label = format!("curl (receiver {host})");
        receivers.push(procs.spawn(
            bench.netns(host),
            &label,
            bench.tools.get("curl"),
            Args::new("-sSf").opt("-o", &out).arg(&url),
            false,
        )?);
        paths.push(out);
    }
    let waited = wait_receivers(
        bench,
        &mut procs,
        &receivers,
        &[server],
        &Done::Exit,
        start,
        tx_before,
    )?;
    procs.stop_all()?;
    files::verify_all(bench.tools, &paths, bench.payload_root)?;
    Ok(SystemRun {
        completion_secs: waited.completion_secs,
        origin_sent_bytes: waited.origin_sent_bytes,
        origin: procs.usage(server).unwrap_or_default(),
        tracker: None,
        receivers: usages(&procs, &receivers),
    })
}
