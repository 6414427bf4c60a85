//! `slotgate-node`: started like redis-server (`slotgate-node [redis.conf] [--directive value ...]`).

/// Counts the bytes in use for INFO `used_memory` and `maxmemory`.
#[global_allocator]
static ALLOC: slotgate_node::alloc::Counting = slotgate_node::alloc::Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(slotgate_node::main_with_args(args));
}
