// Runs one launch of a kernel on the CPU. Input (little-endian): 20 u64 header words
//   mode (0 top-k, 1 logits), tokens, layer, layers, tag_cap, experts, k, data_dtype,
//   weight_dtype, default_tag, has_weights, has_tags, has_seqs, valid (u64 max: none), salt,
//   grid, shared_bytes, enabled, active, accumulator words
// then four arrays, each a u64 byte length and the bytes: data, weights, tags, seqs.
// Output: the active accumulator's words.
static std::vector<unsigned char> read_array(FILE* f) {
    uint64_t n = 0;
    if (fread(&n, 8, 1, f) != 1) std::exit(2);
    std::vector<unsigned char> v(n + 8);
    if (n && fread(v.data(), 1, n, f) != n) std::exit(2);
    return v;
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    FILE* in = std::fopen(argv[1], "rb");
    if (!in) return 2;
    uint64_t h[20];
    if (fread(h, 8, 20, in) != 20) return 2;
    auto data = read_array(in), weights = read_array(in), tags = read_array(in), seqs = read_array(in);
    std::fclose(in);
    std::vector<unsigned long long> acc0(h[19]), acc1(h[19]);
    std::vector<uint32_t> ctrl = {uint32_t(h[17]), uint32_t(h[18]), 0, 0};
    uint32_t valid = uint32_t(h[13]);
    Args a{};
    a.acc[0] = (u64)acc0.data();
    a.acc[1] = (u64)acc1.data();
    a.ctrl = (u64)ctrl.data();
    a.data = (u64)data.data();
    a.weights = h[10] ? (u64)weights.data() : 0;
    a.tags = h[11] ? (u64)tags.data() : 0;
    a.seqs = h[12] ? (u64)seqs.data() : 0;
    a.valid = h[13] == ~0ull ? 0 : (u64)&valid;
    a.salt = h[14];
    a.tokens = uint32_t(h[1]);
    a.layer = uint32_t(h[2]);
    a.layers = uint32_t(h[3]);
    a.tag_cap = uint32_t(h[4]);
    a.experts = uint32_t(h[5]);
    a.k = uint32_t(h[6]);
    a.data_dtype = uint32_t(h[7]);
    a.weight_dtype = uint32_t(h[8]);
    a.default_tag = uint32_t(h[9]);
    const unsigned threads = 256;
    emu::block_dim.x = threads;
    emu::grid_dim.x = unsigned(h[15]);
    emu::shared.assign((h[16] + 7) / 8, 0xdeadbeefdeadbeefull);  // garbage: the kernel zeroes it
    emu::lanes.assign(threads, 0);
    for (unsigned b = 0; b < emu::grid_dim.x; b++) {
        emu::block_barrier = std::make_unique<std::barrier<>>(threads);
        emu::warp_barriers.clear();
        for (unsigned w = 0; w < threads / 32; w++) emu::warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < threads; t++)
            ts.emplace_back([&, b, t] {
                emu::block_idx.x = b;
                emu::thread_idx.x = t;
                if (h[0] == 0) moescope_count_topk(a);
                else moescope_count_logits(a);
            });
        for (auto& t : ts) t.join();
    }
    FILE* out = std::fopen(argv[2], "wb");
    auto& acc = (ctrl[1] & 1) ? acc1 : acc0;
    std::fwrite(acc.data(), 8, acc.size(), out);
    std::fclose(out);
    return 0;
}
