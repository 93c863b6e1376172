// Power-of-two multiply-accumulate: the multiply is one shift.
//
// weight = {sign, e}: e is the (k-1)-bit index into mixq's pot-k magnitudes, ascending;
//          e = 0 is zero and e >= 1 is the integer 2^(e-1) over the denominator
//          2^(2^(k-1)-2) (mixq.grids.integer_magnitudes).
module pot_mac #(
    parameter integer A_BITS = 4,
    parameter integer W_BITS = 4,
    parameter integer ACC_BITS = 24
) (
    input  wire                       clk,
    input  wire                       clear,
    input  wire                       en,
    input  wire        [A_BITS-1:0]   act,
    input  wire        [W_BITS-1:0]   weight,
    output reg  signed [ACC_BITS-1:0] acc
);
    localparam integer E_BITS = W_BITS - 1;
    localparam integer SHIFT_MAX = (1 << E_BITS) - 2;
    localparam integer TERM_BITS = A_BITS + SHIFT_MAX;

    wire              negative = weight[W_BITS-1];
    wire [E_BITS-1:0] e = weight[E_BITS-1:0];
    wire [TERM_BITS-1:0] act_wide = {{SHIFT_MAX{1'b0}}, act};
    wire [TERM_BITS-1:0] term = (e == 0) ? {TERM_BITS{1'b0}} : act_wide << (e - 1'b1);
    wire signed [ACC_BITS-1:0] addend = {{(ACC_BITS - TERM_BITS){1'b0}}, term};

    // Subtracting is adding the complement plus one: one carry chain does both.
    wire signed [ACC_BITS-1:0] flipped = addend ^ {ACC_BITS{negative}};

    initial acc = 0;
    always @(posedge clk) begin
        if (clear)
            acc <= 0;
        else if (en)
            acc <= acc + flipped + negative;
    end
endmodule
