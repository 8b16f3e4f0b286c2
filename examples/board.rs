//! The board API of the HTTP destination's tests (`tests/it/http_server.rs`) as a program of its
//! own, for `benches/http.sh`: it serves on a loopback port, prints its address, and runs until
//! stopped. Requests need `Authorization: Bearer $TM_BOARD_TOKEN`.

#[allow(dead_code)]
#[path = "../tests/it/http_server.rs"]
mod http_server;

fn main() {
    let token = std::env::var("TM_BOARD_TOKEN").unwrap_or_default();
    let server = http_server::BoardServer::start(&token);
    println!("{}", server.url());
    loop {
        std::thread::park();
    }
}
