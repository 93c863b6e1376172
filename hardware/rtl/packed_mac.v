// Two fixed-point multiply-accumulates in one DSP48E1, sharing the activation.
//
// The pre-adder forms the packed weight w_hi * 2^SHIFT + w_lo (DSP48E1: D + A, 25 bits),
// the multiplier takes it times the unsigned activation (B port) and P accumulates
//     P = sum(w_hi * act) * 2^SHIFT + sum(w_lo * act).
// The low field is exact while |sum(w_lo * act)| < 2^(SHIFT-1): SHIFT is the product's
// bits plus the accumulator's guard bits (mixq.hw.packing derives it; 21 for 4-bit weights
// and 4-bit activations, so ResNet-18's longest row of 4,608 products fits). Readout: the
// low field is P's low SHIFT bits read as signed; the high field is P's upper bits plus
// the low field's sign bit, the borrow a negative low field took from it. That
// incrementer is the fabric the packing costs beside each slice.
//
// weight: two's complement, the integer numerator of mixq's fixed-k grid.
// act:    unsigned activation code (after ReLU).
// clear:  synchronous, empties the accumulator (one cycle per dot product).
module packed_mac #(
    parameter integer A_BITS = 4,
    parameter integer W_BITS = 4,
    parameter integer SHIFT = 21,
    parameter integer PRE_BITS = 25,  // pre-adder output (DSP48E1: 25)
    parameter integer P_BITS = 48     // accumulator (DSP48E1: 48)
) (
    input  wire                              clk,
    input  wire                              clear,
    input  wire                              en,
    input  wire        [A_BITS-1:0]          act,
    input  wire        [W_BITS-1:0]          w_hi,
    input  wire        [W_BITS-1:0]          w_lo,
    output wire signed [P_BITS-SHIFT-1:0]    acc_hi,
    output wire signed [SHIFT-1:0]           acc_lo
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

    assign acc_lo = p[SHIFT-1:0];
    assign acc_hi = $signed(p[P_BITS-1:SHIFT]) + $signed({1'b0, p[SHIFT-1]});
endmodule
