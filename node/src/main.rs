//! `slotgate-node`: started like redis-server (`slotgate-node [redis.conf] [--directive value ...]`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(slotgate_node::main_with_args(args));
}
