// One DSP48E1 that does two fixed-point MACs (packed) or one (single), chosen per dot
// product: packed_mac.v with a mode input.
//
// Packed (single = 0): the pre-adder forms w_hi * 2^SHIFT + w_lo and P accumulates both
// dot products SHIFT bits apart, as in packed_mac.v; acc_lo is the low field
// sign-extended to SINGLE_BITS, acc_hi the high field corrected by the low field's sign.
// Single (single = 1): the high weight is 0 (D = 0), so P holds one dot product, at
// activations too wide to pack; acc_lo is P's low SINGLE_BITS bits (the single mode's
// accumulator width), acc_hi is not read.
// The mode select is the multiplexer on acc_lo's bits above SHIFT: what per-layer
// packing costs beside the packed readout (mixq.hw.fpga.mode_select_luts).
//
// weight: two's complement; act: unsigned (A_BITS wide: the single mode's activation;
// the packed mode's activations use the low bits). clear: synchronous, one per dot
// product; the mode changes only with a clear.
module dual_mode_mac #(
    parameter integer A_BITS = 8,
    parameter integer W_BITS = 4,
    parameter integer SHIFT = 21,
    parameter integer SINGLE_BITS = 25,
    parameter integer PRE_BITS = 25,  // pre-adder output (DSP48E1: 25)
    parameter integer P_BITS = 48     // accumulator (DSP48E1: 48)
) (
    input  wire                              clk,
    input  wire                              clear,
    input  wire                              en,
    input  wire                              single,
    input  wire        [A_BITS-1:0]          act,
    input  wire        [W_BITS-1:0]          w_hi,
    input  wire        [W_BITS-1:0]          w_lo,
    output wire signed [P_BITS-SHIFT-1:0]    acc_hi,
    output wire signed [SINGLE_BITS-1:0]     acc_lo
);
    wire signed [PRE_BITS-1:0] packed_weight = ($signed(w_hi) <<< SHIFT) + $signed(w_lo);
    wire signed [A_BITS:0]     act_signed = {1'b0, act};
    wire signed [P_BITS-1:0]   product = packed_weight * act_signed;
    reg  signed [P_BITS-1:0]   p;

    initial p = 0;
    always @(posedge clk) begin
        if (clear)
            p <= 0;
        else if (en)
            p <= p + product;
    end

    assign acc_lo = single ? p[SINGLE_BITS-1:0]
                           : {{(SINGLE_BITS - SHIFT){p[SHIFT-1]}}, p[SHIFT-1:0]};
    assign acc_hi = $signed(p[P_BITS-1:SHIFT]) + $signed({1'b0, p[SHIFT-1]});
endmodule
