// Fixed-point multiply-accumulate: one k-bit weight row element times an unsigned
// activation, accumulated in a signed register.
//
// weight: two's complement, the integer numerator of mixq's fixed-k grid
//         (levels -(2^(k-1)-1) .. 2^(k-1)-1 over the denominator 2^(k-1)-1).
// act:    unsigned activation code (after ReLU).
// clear:  synchronous, empties the accumulator (one cycle per dot product); the
//         reset value is 0 so that synthesis can use the DSP48's P-register reset.
module fixed_mac #(
    parameter integer A_BITS = 4,
    parameter integer W_BITS = 4,
    parameter integer ACC_BITS = 21
) (
    input  wire                       clk,
    input  wire                       clear,
    input  wire                       en,
    input  wire        [A_BITS-1:0]   act,
    input  wire        [W_BITS-1:0]   weight,
    output reg  signed [ACC_BITS-1:0] acc
);
    wire signed [A_BITS:0]        act_signed = {1'b0, act};
    wire signed [A_BITS+W_BITS:0] product = act_signed * $signed(weight);

    initial acc = 0;
    always @(posedge clk) begin
        if (clear)
            acc <= 0;
        else if (en)
            acc <= acc + product;
    end
endmodule
