"""Helpers of benches/text_table.sh (standard library only).

standin OUT.csv          a stand-in for the public vehicle-insurance fraud table (fraud_oracle.csv,
                         15,420 rows): the same 33 columns, 24 of them text, with its category
                         sets, CRLF line ends and a PolicyNumber identifier; fraud (about 5 %)
                         follows Fault, PolicyType and AddressChange_Claim, plus noise.
onehot IN OUT LABEL DROP the table one-hot encoded by hand, as pandas.get_dummies does: numeric
                         columns first, then one 0/1 column per (text column, category), sorted;
                         DROP (an identifier) left out; LABEL last.
"""
import csv
import math
import random
import sys


def standin(out_path, seed=1):
    rnd = random.Random(seed)
    ch = lambda xs, w=None: rnd.choices(xs, w)[0]
    months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
    days = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday']
    makes = ['Honda', 'Toyota', 'Ford', 'Mazda', 'Chevrolet', 'Pontiac', 'Accura', 'Dodge',
             'Mercury', 'Jaguar', 'Nisson', 'VW', 'Saab', 'Saturn', 'Porche', 'BMW', 'Mecedes',
             'Ferrari', 'Lexus']
    policies = ['Sport - Liability', 'Sport - Collision', 'Sedan - Liability',
                'Utility - All Perils', 'Sedan - All Perils', 'Sedan - Collision',
                'Utility - Collision', 'Utility - Liability', 'Sport - All Perils']
    cols = ['Month', 'WeekOfMonth', 'DayOfWeek', 'Make', 'AccidentArea', 'DayOfWeekClaimed',
            'MonthClaimed', 'WeekOfMonthClaimed', 'Sex', 'MaritalStatus', 'Age', 'Fault',
            'PolicyType', 'VehicleCategory', 'VehiclePrice', 'FraudFound_P', 'PolicyNumber',
            'RepNumber', 'Deductible', 'DriverRating', 'Days_Policy_Accident',
            'Days_Policy_Claim', 'PastNumberOfClaims', 'AgeOfVehicle', 'AgeOfPolicyHolder',
            'PoliceReportFiled', 'WitnessPresent', 'AgentType', 'NumberOfSuppliments',
            'AddressChange_Claim', 'NumberOfCars', 'Year', 'BasePolicy']
    with open(out_path, 'w', newline='') as f:
        w = csv.writer(f, lineterminator='\r\n')
        w.writerow(cols)
        for i in range(15420):
            fault = ch(['Policy Holder', 'Third Party'], [0.73, 0.27])
            policy = ch(policies, [1, 3, 20, 10, 27, 24, 2, 1, 1])
            addr = ch(['1 year', 'no change', '4 to 8 years', '2 to 3 years', 'under 6 months'],
                      [2, 93, 4, 1, 0.3])
            risk = (-4.3 + (0.9 if fault == 'Policy Holder' else -1.5)
                    + (0.8 if 'Collision' in policy or 'All' in policy else -1.2)
                    + (1.5 if addr != 'no change' else 0) + rnd.gauss(0, 0.5))
            fraud = int(rnd.random() < 1 / (1 + math.exp(-risk)))
            # One row of the real table has 0 for the claim's day and month.
            day_claimed, month_claimed = ('0', '0') if i == 1516 else (ch(days), ch(months))
            w.writerow([
                ch(months), rnd.randint(1, 5), ch(days),
                ch(makes, [28, 31, 22, 15, 10, 24, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
                ch(['Urban', 'Rural'], [9, 1]), day_claimed, month_claimed, rnd.randint(1, 5),
                ch(['Male', 'Female'], [84, 16]),
                ch(['Single', 'Married', 'Widow', 'Divorced'], [30, 69, 1, 1]),
                rnd.randint(16, 80), fault, policy, policy.split(' - ')[0],
                ch(['more than 69000', '20000 to 29000', '30000 to 39000', 'less than 20000',
                    '40000 to 59000', '60000 to 69000']),
                fraud, i + 1, rnd.randint(1, 16), ch([300, 400, 500, 700], [1, 96, 2, 1]),
                rnd.randint(1, 4),
                ch(['more than 30', '15 to 30', 'none', '1 to 7', '8 to 15'],
                   [98, 0.5, 0.5, 0.3, 0.3]),
                ch(['more than 30', '15 to 30', '8 to 15', 'none'], [98, 1, 1, 0.1]),
                ch(['none', '1', '2 to 4', 'more than 4'], [28, 23, 36, 13]),
                ch(['3 years', '6 years', '7 years', 'more than 7', '5 years', 'new', '4 years',
                    '2 years'], [1, 22, 38, 25, 9, 2, 2, 1]),
                ch(['26 to 30', '31 to 35', '41 to 50', '51 to 65', '21 to 25', '36 to 40',
                    '16 to 17', 'over 65', '18 to 20'], [4, 36, 18, 9, 1, 26, 2, 3, 1]),
                ch(['No', 'Yes'], [97, 3]), ch(['No', 'Yes'], [99, 1]),
                ch(['External', 'Internal'], [98, 2]),
                ch(['none', 'more than 5', '1 to 2', '3 to 5'], [45, 25, 16, 14]), addr,
                ch(['3 to 4', '1 vehicle', '2 vehicles', '5 to 8', 'more than 8'],
                   [3, 92, 4, 1, 0.1]),
                ch([1994, 1995, 1996]), policy.split(' - ')[1],
            ])


def onehot(src, dst, label, drop):
    with open(src, newline='', encoding='utf-8-sig') as f:
        rows = list(csv.reader(f))
    h, data = rows[0], rows[1:]

    def isnum(v):
        try:
            float(v)
            return True
        except ValueError:
            return False

    text = [j for j in range(len(h)) if h[j] != label and not all(isnum(r[j]) for r in data)]
    num = [j for j in range(len(h)) if h[j] not in (label, drop) and j not in text]
    cats = {j: sorted(set(r[j] for r in data)) for j in text}
    li = h.index(label)
    with open(dst, 'w', newline='') as f:
        out = csv.writer(f, lineterminator='\n')
        out.writerow([h[j] for j in num] + [f'{h[j]}_{c}' for j in text for c in cats[j]]
                     + [label])
        for r in data:
            out.writerow([r[j] for j in num] + [int(r[j] == c) for j in text for c in cats[j]]
                         + [r[li]])


if __name__ == '__main__':
    if sys.argv[1] == 'standin':
        standin(sys.argv[2])
    elif sys.argv[1] == 'onehot':
        onehot(*sys.argv[2:6])
    else:
        sys.exit(__doc__)
